//! Sharing a household: `finwise member list|add|rm|leave`, `finwise tenant rename|rm`.
//!
//! The server decides who may do what (owners invite, remove, rename and delete; any member may
//! leave; the last owner cannot leave); these commands turn its refusals into sentences that
//! say what to do instead.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::Path,
};

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use finwise_client::{Auth, Client, Error, Member, Tenant};
use serde_json::json;

use super::{entities::print_table, explain, find_tenant, Ctx};

#[derive(Subcommand)]
pub enum MemberCommand {
    /// List the members of the current tenant and their roles.
    #[command(visible_alias = "ls")]
    List,
    /// Invite a registered user by e-mail (owners only); on an existing member, change the role.
    Add {
        email: String,
        /// Make them an owner (may invite, remove, rename and delete) instead of a member.
        #[arg(long)]
        owner: bool,
    },
    /// Remove a member (by e-mail, name or user id; owners only). Naming yourself leaves.
    #[command(visible_alias = "remove")]
    Rm { who: String },
    /// Leave the current tenant (its data stays with the other members).
    Leave,
}

/// The current tenant of the session: (id, name).
fn current(auth: &Auth) -> Result<(String, String)> {
    let s = auth.session();
    match s.tenant {
        Some(id) => Ok((id.clone(), s.tenant_name.unwrap_or(id))),
        None => bail!("no tenant selected: run `finwise tenant list` and `finwise tenant use NAME`"),
    }
}

/// The server's refusals of membership changes, as what to do next.
fn refused(e: Error, server: &str, tenant: &str) -> anyhow::Error {
    match e {
        Error::Http { status: 403, message } if message.contains("only an owner") => {
            anyhow!("only an owner of {tenant} can do this ({message}): ask an owner")
        }
        Error::Http { status: 403, .. } => {
            anyhow!("you are not a member of {tenant} (any more): run `finwise tenant list`")
        }
        Error::Http { status: 404, .. } => anyhow!("{tenant} has no such member, or it no longer exists"),
        Error::Http { status: 409, message } => anyhow!("refused: {message}"),
        Error::Http { status: 422, message } if message.contains("e-mail") => {
            anyhow!("{message}: they need to register on this server first (`finwise login --register`)")
        }
        Error::Http { status, message } if (400..500).contains(&status) => anyhow!("refused ({status}): {message}"),
        other => explain(other, server),
    }
}

fn print_members(ctx: &Ctx, me: &str, members: &[Member]) -> Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string(members)?);
        return Ok(());
    }
    let rows = members
        .iter()
        .map(|m| {
            let you = if m.user_id == me { "(you)" } else { "" };
            vec![m.name.clone(), m.email.clone(), m.role.clone(), you.to_owned()]
        })
        .collect();
    print_table(&["NAME", "E-MAIL", "ROLE", ""], rows);
    Ok(())
}

/// The member `who` names: e-mail or name (any case), user id, or a user id prefix of four or more.
fn find_member<'a>(members: &'a [Member], who: &str, tenant: &str) -> Result<&'a Member> {
    match super::the_one(members, who, |m| &m.user_id, |m| vec![&m.email, &m.name]) {
        Ok(m) => Ok(m),
        Err(0) => bail!("'{who}' is not a member of {tenant}: run `finwise member list`"),
        Err(_) => bail!("'{who}' matches several members of {tenant}: use the e-mail"),
    }
}

pub(super) async fn member(ctx: &Ctx, cmd: MemberCommand) -> Result<()> {
    let auth = ctx.auth()?;
    let server = auth.server();
    let me = auth.user_id();
    let (tenant, name) = current(&auth)?;
    let err = |e| refused(e, &server, &name);
    match cmd {
        MemberCommand::List => {
            let members = auth.members(&tenant).await.map_err(err)?;
            print_members(ctx, &me, &members)
        }
        MemberCommand::Add { email, owner } => {
            let role = if owner { "owner" } else { "member" };
            let members = auth.add_member(&tenant, &email, role).await.map_err(err)?;
            if ctx.json {
                return print_members(ctx, &me, &members);
            }
            println!("{email} is now {} of {name}; they see it in `finwise tenant list` or the web app", article(role));
            Ok(())
        }
        MemberCommand::Rm { who } => {
            let members = auth.members(&tenant).await.map_err(err)?;
            let m = find_member(&members, &who, &name)?;
            if m.user_id == me {
                return leave(ctx, &auth, &tenant, &name).await;
            }
            auth.remove_member(&tenant, &m.user_id).await.map_err(err)?;
            if ctx.json {
                println!("{}", json!({"removed": m}));
            } else {
                println!("removed {} ({}) from {name}; their open connections were closed", m.name, m.email);
            }
            Ok(())
        }
        MemberCommand::Leave => leave(ctx, &auth, &tenant, &name).await,
    }
}

fn article(role: &str) -> &'static str {
    if role == "owner" {
        "an owner"
    } else {
        "a member"
    }
}

async fn leave(ctx: &Ctx, auth: &Auth, tenant: &str, name: &str) -> Result<()> {
    let server = auth.server();
    auth.remove_member(tenant, &auth.user_id()).await.map_err(|e| refused(e, &server, name))?;
    let removed = forget(ctx, auth, tenant)?;
    if ctx.json {
        println!("{}", json!({"left": tenant, "local_copy_removed": removed}));
    } else {
        println!("you left {name}; {}", local_note(removed));
    }
    Ok(())
}

/// Drops a tenant we no longer reach: from the session when current, and its local store.
fn forget(ctx: &Ctx, auth: &Auth, tenant: &str) -> Result<bool> {
    if auth.session().tenant.as_deref() == Some(tenant) {
        auth.update_session(|s| {
            s.tenant = None;
            s.tenant_name = None;
        })?;
    }
    remove_store(&Client::store_path(&ctx.data_dir(), &auth.user_id(), tenant))
}

/// Removes a local store with its journal files; whether there was one.
fn remove_store(db: &Path) -> Result<bool> {
    let existed = db.exists();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let f = db.with_file_name(format!("{}{suffix}", db.file_name().unwrap_or_default().to_string_lossy()));
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("cannot remove the local copy {}: {e}", f.display())),
        }
    }
    Ok(existed)
}

fn local_note(removed: bool) -> &'static str {
    if removed {
        "its local copy on this machine was removed"
    } else {
        "there was no local copy on this machine"
    }
}

pub(super) async fn rename(ctx: &Ctx, auth: &Auth, new_name: &str) -> Result<()> {
    let server = auth.server();
    let (tenant, name) = current(auth)?;
    let t = auth.rename_tenant(&tenant, new_name).await.map_err(|e| refused(e, &server, &name))?;
    auth.update_session(|s| s.tenant_name = Some(t.name.clone()))?;
    if ctx.json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        println!("renamed {name} to {}", t.name);
    }
    Ok(())
}

pub(super) async fn delete(ctx: &Ctx, auth: &Auth, wanted: Option<String>, yes: bool) -> Result<()> {
    let server = auth.server();
    let list = auth.tenants().await.map_err(|e| explain(e, &server))?;
    let t: Tenant = match wanted {
        Some(w) => find_tenant(&list, &w)?.clone(),
        None => {
            let (id, _) = current(auth)?;
            list.iter()
                .find(|t| t.uuid == id)
                .cloned()
                .ok_or_else(|| anyhow!("the current tenant is not among yours any more: run `finwise tenant list`"))?
        }
    };
    if !yes {
        confirm(&t)?;
    }
    auth.delete_tenant(&t.uuid).await.map_err(|e| refused(e, &server, &t.name))?;
    let removed = forget(ctx, auth, &t.uuid)?;
    if ctx.json {
        println!("{}", json!({"deleted": t, "local_copy_removed": removed}));
    } else {
        println!("deleted {} ({}) with all its data, for every member; {}", t.name, t.uuid, local_note(removed));
    }
    Ok(())
}

/// Asks to type the tenant's name; refuses when there is no terminal to ask on.
fn confirm(t: &Tenant) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("deleting {} removes all its data for every member: pass --yes to confirm", t.name);
    }
    eprint!("This deletes {} and all its data for every member. Type its name to confirm: ", t.name);
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != t.name {
        bail!("not deleted: the name did not match");
    }
    Ok(())
}
