//! The client subcommands of `finwise`: login, tenants, entities, sync and status.
//!
//! State lives in one directory, `$FINWISE_HOME` (default `~/.finwise`): `session.json` (server,
//! user, tokens, current tenant) and `data/<user>/<tenant>.db` (the local store). Every entity
//! command works offline on the local store; `finwise sync` exchanges the changes.
//!
//! This file: the arguments, the session context, login, logout and tenants; `household.rs`:
//! members, renaming and deleting a tenant; `entities.rs`: the per-entity commands and their
//! tables; `sync.rs`: `sync`, `sync --watch` and `status`.

mod entities;
mod household;
mod sync;

use entities::{entity, print_table};
use sync::{status, sync};

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    sync::Arc,
};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use finwise_client::{Auth, Client, ClientOptions, EntityType, Error};
use serde_json::json;

/// Options shared by the client commands.
#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Directory of the session and the local stores (default: ~/.finwise).
    #[arg(long, global = true, env = "FINWISE_HOME")]
    home: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Log in to a server (optionally registering first) and remember the session.
    Login(LoginArgs),
    /// Forget the session (local stores are kept).
    Logout,
    /// Create, list, select, rename or delete tenants (households).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Share the current tenant: list, invite and remove members, or leave it.
    #[command(subcommand, visible_alias = "members")]
    Member(household::MemberCommand),
    /// Accounts of the current tenant.
    #[command(subcommand, visible_alias = "account")]
    Accounts(EntityCommand),
    /// Account groups.
    #[command(subcommand, visible_alias = "group")]
    Groups(EntityCommand),
    /// Categories.
    #[command(subcommand, visible_alias = "category")]
    Categories(EntityCommand),
    /// Category groups.
    #[command(subcommand, name = "category-groups")]
    CategoryGroups(EntityCommand),
    /// Transactions.
    #[command(subcommand, visible_alias = "transaction")]
    Transactions(EntityCommand),
    /// Recipients (payees).
    #[command(subcommand, visible_alias = "recipient")]
    Recipients(EntityCommand),
    /// Tags.
    #[command(subcommand, visible_alias = "tag")]
    Tags(EntityCommand),
    /// Planned and recurring transactions.
    #[command(subcommand, visible_aliases = ["plans", "plan"])]
    Planning(EntityCommand),
    /// Automation rules (conditions and actions applied to new transactions).
    #[command(subcommand, visible_alias = "rule")]
    Rules(EntityCommand),
    /// Exchange changes with the server: once, or stay connected with --watch.
    Sync(SyncArgs),
    /// Queue, cursor, last sync, convergence and connection of the current tenant.
    Status,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8000.
    #[arg(long, env = "FINWISE_SERVER")]
    server: String,
    /// E-mail (or user name).
    #[arg(long, env = "FINWISE_EMAIL")]
    email: String,
    /// Password (default: $FINWISE_PASSWORD, else asked on the terminal).
    #[arg(long, env = "FINWISE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Create the account first.
    #[arg(long)]
    register: bool,
    /// Display name for --register (default: the part of the e-mail before '@').
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant on the server and make it the current one.
    Create { name: String },
    /// List the tenants you are a member of.
    #[command(visible_alias = "ls")]
    List,
    /// Make a tenant the current one (by name, id or id prefix).
    Use { tenant: String },
    /// Rename the current tenant (owners only).
    Rename { name: String },
    /// Delete a tenant and all its data on the server, for every member (owners only).
    #[command(visible_alias = "delete")]
    Rm {
        /// The tenant (name, id or id prefix; default: the current one).
        tenant: Option<String>,
        /// Do not ask: needed when not on a terminal.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum EntityCommand {
    /// Add one: fields as KEY=VALUE (values are JSON when they parse, else text).
    ///
    /// Keys are the entity's fields (a wrong key is refused with the list of fields). References
    /// take a name or an id: group= (accounts, categories), account=, category=, recipient=;
    /// type= is an account's accountType. Required fields you leave out get sensible values
    /// (balance 0, today's date, the only group or account, ...).
    Add {
        #[arg(value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
    /// Change fields of one (by id, id prefix or name).
    Edit {
        id: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        fields: Vec<String>,
    },
    /// Delete one (by id, id prefix or name).
    #[command(visible_alias = "delete")]
    Rm { id: String },
    /// List all.
    #[command(visible_alias = "list")]
    Ls,
    /// Show one with every field.
    Show { id: String },
}

#[derive(Args)]
pub struct SyncArgs {
    /// Stay connected: push local changes as they are made, print incoming ones (Ctrl-C stops).
    #[arg(long)]
    watch: bool,
    /// Ignore the cursor and load everything.
    #[arg(long)]
    full: bool,
    /// Put failed queue entries back into the queue first.
    #[arg(long)]
    retry_failed: bool,
}

struct Ctx {
    json: bool,
    home: PathBuf,
}

impl Ctx {
    fn session_file(&self) -> PathBuf {
        self.home.join("session.json")
    }
    fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }

    fn auth(&self) -> Result<Arc<Auth>> {
        let file = self.session_file();
        if !file.exists() {
            bail!("not logged in: run `finwise login --server URL --email EMAIL`");
        }
        let auth = Auth::load(&file)
            .with_context(|| format!("cannot read the session {}: run `finwise login` again", file.display()))?;
        Ok(Arc::new(auth))
    }

    fn client_with(&self, opts: ClientOptions) -> Result<Client> {
        let auth = self.auth()?;
        let Some(tenant) = auth.session().tenant else {
            bail!("no tenant selected: run `finwise tenant list` and `finwise tenant use NAME`, or `finwise tenant create NAME`");
        };
        Ok(Client::open(auth, &tenant, &self.data_dir(), opts)?)
    }

    fn client(&self) -> Result<Client> {
        self.client_with(ClientOptions::default())
    }
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".finwise")
}

/// Turns client errors into messages that say what to do next (for commands that touch no local
/// store: login, tenants).
fn explain(e: Error, server: &str) -> anyhow::Error {
    explain_queued(e, server, false)
}

/// [`explain`], for commands of a store: `queued` says whether local changes wait to be sent.
fn explain_queued(e: Error, server: &str, queued: bool) -> anyhow::Error {
    let then = if queued { "; your changes stay queued locally: run `finwise sync` when it is back" } else { "" };
    match e {
        Error::SessionExpired(_) => {
            anyhow!("session expired: run `finwise login --server {server} --email EMAIL` again")
        }
        Error::Connect(m) | Error::Http { message: m, status: 502..=504 } => {
            anyhow!("cannot reach the server at {server} ({m}){then}")
        }
        Error::Timeout(what) => anyhow!("the server at {server} did not answer ({what}){then}"),
        Error::Forbidden(t) => {
            anyhow!("you are not a member of tenant {t}: run `finwise tenant list` and `finwise tenant use NAME`")
        }
        other => anyhow!(other),
    }
}

/// The entity commands and their types (the subcommand names clap derives).
const ENTITY_COMMANDS: [(&str, EntityType); 9] = [
    ("accounts", EntityType::Account),
    ("groups", EntityType::AccountGroup),
    ("categories", EntityType::Category),
    ("category-groups", EntityType::CategoryGroup),
    ("transactions", EntityType::Transaction),
    ("recipients", EntityType::Recipient),
    ("tags", EntityType::Tag),
    ("planning", EntityType::PlanningTransaction),
    ("rules", EntityType::AutomationRule),
];

/// Adds the entity's fields, with their types, to the help of its `add` and `edit` commands.
pub fn with_field_help(mut cmd: clap::Command) -> clap::Command {
    for (name, t) in ENTITY_COMMANDS {
        let help = entities::fields_help(t);
        cmd = cmd.mut_subcommand(name, |c| {
            c.mut_subcommand("add", |a| a.after_help(help.clone()))
                .mut_subcommand("edit", |e| e.after_help(help.clone()))
        });
    }
    cmd
}

pub async fn run(g: GlobalArgs, cmd: ClientCommand) -> Result<()> {
    let ctx = Ctx { json: g.json, home: g.home.unwrap_or_else(default_home) };
    match cmd {
        ClientCommand::Login(a) => login(&ctx, a).await,
        ClientCommand::Logout => {
            let f = ctx.session_file();
            if f.exists() {
                std::fs::remove_file(&f)?;
            }
            println!("logged out (local data kept in {})", ctx.data_dir().display());
            Ok(())
        }
        ClientCommand::Tenant(t) => tenant(&ctx, t).await,
        ClientCommand::Member(m) => household::member(&ctx, m).await,
        ClientCommand::Accounts(c) => entity(&ctx, EntityType::Account, c),
        ClientCommand::Groups(c) => entity(&ctx, EntityType::AccountGroup, c),
        ClientCommand::Categories(c) => entity(&ctx, EntityType::Category, c),
        ClientCommand::CategoryGroups(c) => entity(&ctx, EntityType::CategoryGroup, c),
        ClientCommand::Transactions(c) => entity(&ctx, EntityType::Transaction, c),
        ClientCommand::Recipients(c) => entity(&ctx, EntityType::Recipient, c),
        ClientCommand::Tags(c) => entity(&ctx, EntityType::Tag, c),
        ClientCommand::Planning(c) => entity(&ctx, EntityType::PlanningTransaction, c),
        ClientCommand::Rules(c) => entity(&ctx, EntityType::AutomationRule, c),
        ClientCommand::Sync(a) => sync(&ctx, a).await,
        ClientCommand::Status => status(&ctx).await,
    }
}

/// Reads the password from stdin; on a terminal without echo (via `stty`, where there is one).
fn read_password() -> Result<String> {
    eprint!("password: ");
    std::io::stderr().flush()?;
    let tty = std::io::stdin().is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status();
    };
    if tty {
        stty("-echo");
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        bail!("no password given: pass --password or set FINWISE_PASSWORD");
    }
    Ok(p)
}

async fn login(ctx: &Ctx, a: LoginArgs) -> Result<()> {
    let server = finwise_client::normalize_server(&a.server);
    let password = match a.password {
        Some(p) => p,
        None => read_password()?,
    };
    if a.register {
        let name = a.name.clone().unwrap_or_else(|| a.email.split('@').next().unwrap_or("user").to_owned());
        match Auth::register(&server, &name, &a.email, &password).await {
            Ok(()) => {
                if !ctx.json {
                    println!("registered {}", a.email);
                }
            }
            Err(Error::Http { status, message }) => bail!("registration refused ({status}): {message}"),
            Err(e) => return Err(explain(e, &server)),
        }
    }
    let previous = Auth::load(&ctx.session_file()).ok().map(|a| a.session());
    let auth = match Auth::login(&server, &a.email, &password, Some(ctx.session_file())).await {
        Ok(a) => a,
        Err(Error::Http { status: 401, .. }) => bail!("wrong e-mail or password (new here? add `--register`)"),
        Err(Error::Http { status: 429, .. }) => bail!("too many failed logins: wait a few minutes and try again"),
        Err(e) => return Err(explain(e, &server)),
    };
    // Pick the tenant when the choice is obvious.
    let tenants = auth.tenants().await.map_err(|e| explain(e, &server))?;
    let kept = previous
        .filter(|p| p.server == server && p.user_id == auth.user_id())
        .and_then(|p| p.tenant)
        .and_then(|id| tenants.iter().find(|t| t.uuid == id));
    let pick = kept.or(if tenants.len() == 1 { tenants.first() } else { None });
    if let Some(t) = pick {
        auth.update_session(|s| {
            s.tenant = Some(t.uuid.clone());
            s.tenant_name = Some(t.name.clone());
        })?;
    }
    let s = auth.session();
    if ctx.json {
        println!("{}", json!({"server": s.server, "user_id": s.user_id, "email": s.email, "tenant": s.tenant}));
    } else {
        println!("logged in to {} as {} ({})", s.server, s.email, s.name);
        match &s.tenant_name {
            Some(t) => println!("current tenant: {t}"),
            None if tenants.is_empty() => println!("next: `finwise tenant create NAME`"),
            None => println!("next: `finwise tenant list` and `finwise tenant use NAME`"),
        }
    }
    Ok(())
}

async fn tenant(ctx: &Ctx, cmd: TenantCommand) -> Result<()> {
    let auth = ctx.auth()?;
    let server = auth.server();
    match cmd {
        TenantCommand::Create { name } => {
            let t = auth.create_tenant(&name).await.map_err(|e| explain(e, &server))?;
            auth.update_session(|s| {
                s.tenant = Some(t.uuid.clone());
                s.tenant_name = Some(t.name.clone());
            })?;
            if ctx.json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!("created tenant {} ({}) and made it current", t.name, t.uuid);
            }
        }
        TenantCommand::List => {
            let current = auth.session().tenant;
            let list = auth.tenants().await.map_err(|e| explain(e, &server))?;
            if ctx.json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no tenants yet: run `finwise tenant create NAME`");
            } else {
                let rows = list
                    .iter()
                    .map(|t| {
                        let mark = if current.as_deref() == Some(t.uuid.as_str()) { "*" } else { "" };
                        vec![mark.to_owned(), t.uuid.clone(), t.name.clone()]
                    })
                    .collect();
                print_table(&["", "ID", "NAME"], rows);
            }
        }
        TenantCommand::Use { tenant } => {
            let list = auth.tenants().await.map_err(|e| explain(e, &server))?;
            let t = find_tenant(&list, &tenant)?;
            auth.update_session(|s| {
                s.tenant = Some(t.uuid.clone());
                s.tenant_name = Some(t.name.clone());
            })?;
            if ctx.json {
                println!("{}", serde_json::to_string(t)?);
            } else {
                println!("current tenant: {} ({}); run `finwise sync` to fetch its data", t.name, t.uuid);
            }
        }
        TenantCommand::Rename { name } => household::rename(ctx, &auth, &name).await?,
        TenantCommand::Rm { tenant, yes } => household::delete(ctx, &auth, tenant, yes).await?,
    }
    Ok(())
}

/// The one item of `items` that `key` names, the way every command takes a name: the item's id,
/// an id prefix of four or more characters, or one of its `names` (any case). `Err(n)`: `n`
/// items match, none or several.
fn the_one<'a, T>(
    items: &'a [T],
    key: &str,
    id: impl Fn(&'a T) -> &'a str,
    names: impl Fn(&'a T) -> Vec<&'a str>,
) -> std::result::Result<&'a T, usize> {
    let matches: Vec<&T> = items
        .iter()
        .filter(|item| {
            let id = id(item);
            id == key
                || (key.len() >= 4 && id.starts_with(key))
                || names(item).iter().any(|n| n.eq_ignore_ascii_case(key))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        _ => Err(matches.len()),
    }
}

/// The tenant `wanted` names: its id, its name (any case) or an id prefix of four or more.
fn find_tenant<'a>(list: &'a [finwise_client::Tenant], wanted: &str) -> Result<&'a finwise_client::Tenant> {
    match the_one(list, wanted, |t| &t.uuid, |t| vec![&t.name]) {
        Ok(t) => Ok(t),
        Err(0) => bail!("no tenant matches '{wanted}': run `finwise tenant list`"),
        Err(_) => bail!("'{wanted}' matches several tenants: use the id (see `finwise tenant list`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::the_one;

    struct Item(&'static str, &'static str, &'static str);

    fn pick(items: &[Item], key: &str) -> Result<&'static str, usize> {
        the_one(items, key, |i| i.0, |i| vec![i.1, i.2]).map(|i| i.0)
    }

    #[test]
    fn one_item_by_id_prefix_or_any_name() {
        let items = [
            Item("0a1b2c3d-aaaa", "Girokonto", "giro@example.org"),
            Item("0a1b9999-bbbb", "Sparbuch", "spar@example.org"),
        ];
        assert_eq!(pick(&items, "0a1b9999-bbbb"), Ok("0a1b9999-bbbb"));
        assert_eq!(pick(&items, "0a1b2"), Ok("0a1b2c3d-aaaa"));
        assert_eq!(pick(&items, "GIROKONTO"), Ok("0a1b2c3d-aaaa"));
        assert_eq!(pick(&items, "Spar@Example.org"), Ok("0a1b9999-bbbb"));
        // a prefix needs four characters, and one that fits both is ambiguous
        assert_eq!(pick(&items, "0a1"), Err(0));
        assert_eq!(pick(&items, "0a1b"), Err(2));
        assert_eq!(pick(&items, "Haushaltskasse"), Err(0));
        // a prefix of one item and the name of another: ambiguous, not the first rule that fits
        let clash = [Item("beef0001", "x", "y"), Item("cafe0002", "beef", "z")];
        assert_eq!(pick(&clash, "beef"), Err(2));
    }
}
