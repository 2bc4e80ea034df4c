//! The client subcommands of `finwise`: login, tenants, entities, sync and status.
//!
//! State lives in one directory, `$FINWISE_HOME` (default `~/.finwise`): `session.json` (server,
//! user, tokens, current tenant) and `data/<user>/<tenant>.db` (the local store). Every entity
//! command works offline on the local store; `finwise sync` exchanges the changes.

use std::{
    collections::HashMap,
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use finwise_client::{
    Auth, Change, Client, ClientOptions, ConnectionState, EntityType, EntryStatus, Error, Operation, Origin, Progress,
    SyncReport,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

/// Options shared by the client commands.
#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
    /// Create, list or select tenants (households).
    #[command(subcommand)]
    Tenant(TenantCommand),
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

/// Turns client errors into messages that say what to do next.
fn explain(e: Error, server: &str) -> anyhow::Error {
    match e {
        Error::SessionExpired(_) => anyhow!("session expired: run `finwise login --server {server} --email EMAIL` again"),
        Error::Connect(m) | Error::Http { message: m, status: 502..=504 } => anyhow!(
            "cannot reach the server at {server} ({m}); your changes stay queued locally: run `finwise sync` when it is back"
        ),
        Error::Timeout(what) => anyhow!("the server at {server} did not answer ({what}); changes stay queued: try `finwise sync` again"),
        Error::Forbidden(t) => anyhow!("you are not a member of tenant {t}: run `finwise tenant list` and `finwise tenant use NAME`"),
        other => anyhow!(other),
    }
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
        ClientCommand::Accounts(c) => entity(&ctx, EntityType::Account, c),
        ClientCommand::Groups(c) => entity(&ctx, EntityType::AccountGroup, c),
        ClientCommand::Categories(c) => entity(&ctx, EntityType::Category, c),
        ClientCommand::CategoryGroups(c) => entity(&ctx, EntityType::CategoryGroup, c),
        ClientCommand::Transactions(c) => entity(&ctx, EntityType::Transaction, c),
        ClientCommand::Recipients(c) => entity(&ctx, EntityType::Recipient, c),
        ClientCommand::Tags(c) => entity(&ctx, EntityType::Tag, c),
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
            let matches: Vec<_> = list
                .iter()
                .filter(|t| {
                    t.uuid == tenant
                        || t.name.eq_ignore_ascii_case(&tenant)
                        || (tenant.len() >= 4 && t.uuid.starts_with(&tenant))
                })
                .collect();
            let t = match matches.as_slice() {
                [t] => *t,
                [] => bail!("no tenant matches '{tenant}': run `finwise tenant list`"),
                _ => bail!("'{tenant}' matches several tenants: use the id (see `finwise tenant list`)"),
            };
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
    }
    Ok(())
}

// ----- entities -----

/// The human name of a type in messages and the command that lists it.
fn noun(t: EntityType) -> (&'static str, &'static str) {
    match t {
        EntityType::Account => ("account", "accounts"),
        EntityType::AccountGroup => ("group", "groups"),
        EntityType::Category => ("category", "categories"),
        EntityType::CategoryGroup => ("category group", "category-groups"),
        EntityType::Transaction => ("transaction", "transactions"),
        EntityType::Recipient => ("recipient", "recipients"),
        EntityType::Tag => ("tag", "tags"),
        EntityType::AutomationRule => ("rule", "rules"),
        EntityType::PlanningTransaction => ("planned transaction", "planning"),
    }
}

/// Short keys accepted on the command line, and which type a reference key points to.
fn resolve_key(t: EntityType, key: &str) -> (String, Option<EntityType>) {
    let k = match (t, key) {
        (EntityType::Account, "group") => "accountGroupId",
        (EntityType::Account, "type") => "accountType",
        (EntityType::Category, "group") => "categoryGroupId",
        (_, "account") => "accountId",
        (_, "category") => "categoryId",
        (_, "recipient") => "recipientId",
        (_, "parent") if t == EntityType::Category => "parentCategoryId",
        _ => key,
    };
    let target = match k {
        "accountGroupId" => Some(EntityType::AccountGroup),
        "accountId" | "transferToAccountId" => Some(EntityType::Account),
        "categoryId" | "parentCategoryId" | "toCategoryId" | "defaultCategoryId" => Some(EntityType::Category),
        "categoryGroupId" => Some(EntityType::CategoryGroup),
        "recipientId" => Some(EntityType::Recipient),
        _ => None,
    };
    (k.to_owned(), target)
}

fn parse_value(s: &str) -> Value {
    match serde_json::from_str::<Value>(s) {
        Ok(v) => v,
        Err(_) => Value::from(s),
    }
}

/// Finds one entity by id, unique id prefix (4+ characters) or name (case-insensitive; for
/// transactions also the description or payee).
fn find(client: &Client, t: EntityType, key: &str) -> Result<Map<String, Value>> {
    if let Some(e) = client.get(t, key)? {
        return Ok(e);
    }
    let all = client.list(t)?;
    let by_prefix: Vec<_> =
        all.iter().filter(|e| key.len() >= 4 && e["id"].as_str().is_some_and(|id| id.starts_with(key))).collect();
    let named = |e: &Map<String, Value>| {
        ["name", "description", "payee"]
            .iter()
            .any(|k| e.get(*k).and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(key)))
    };
    let by_name: Vec<_> = all.iter().filter(|e| named(e)).collect();
    let (one, plural) = noun(t);
    match (by_prefix.as_slice(), by_name.as_slice()) {
        ([e], _) | ([], [e]) => Ok((*e).clone()),
        ([], []) => bail!("no {one} matches '{key}': run `finwise {plural} ls`"),
        _ => bail!("'{key}' matches several {plural}: use the id (see `finwise {plural} ls`)"),
    }
}

/// Parses KEY=VALUE arguments, resolving references given by name.
fn fields(client: &Client, t: EntityType, args: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            bail!("'{a}' is not KEY=VALUE (e.g. name=Giro balance=100)");
        };
        let (key, target) = resolve_key(t, k.trim());
        let fields = t.def().fields;
        if !fields.iter().any(|f| f.name == key || f.alias == Some(key.as_str())) {
            let names: Vec<&str> = fields.iter().map(|f| f.name).filter(|n| *n != "id").collect();
            bail!("{} has no field '{k}'; its fields: {}", noun(t).0, names.join(", "));
        }
        let value = match target {
            Some(rt) if !v.is_empty() && v != "null" => {
                Value::from(find(client, rt, v)?["id"].as_str().unwrap_or(v).to_owned())
            }
            _ => parse_value(v),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// Sensible values for required fields that the user did not give.
fn defaults(client: &Client, t: EntityType, f: &mut Map<String, Value>) -> Result<()> {
    fn set(f: &mut Map<String, Value>, k: &str, v: Value) {
        f.entry(k.to_owned()).or_insert(v);
    }
    let only = |rt: EntityType| -> Result<Option<String>> {
        let l = client.list(rt)?;
        Ok((l.len() == 1).then(|| l[0]["id"].as_str().unwrap_or_default().to_owned()))
    };
    match t {
        EntityType::Account => {
            set(f, "isActive", json!(true));
            set(f, "isOfflineBudget", json!(false));
            set(f, "balance", json!(0));
            set(f, "offset", json!(0));
            if !f.contains_key("accountGroupId") {
                match only(EntityType::AccountGroup)? {
                    Some(g) => {
                        f.insert("accountGroupId".into(), json!(g));
                    }
                    None => bail!(
                        "an account needs a group: add `group=NAME` (create one with `finwise groups add name=NAME`)"
                    ),
                }
            }
        }
        EntityType::AccountGroup | EntityType::CategoryGroup => {
            set(f, "sortOrder", json!(client.list(t)?.len()));
            if t == EntityType::CategoryGroup {
                set(f, "isIncomeGroup", json!(false));
            }
        }
        EntityType::Category => {
            for k in ["budgeted", "activity", "available"] {
                set(f, k, json!(0));
            }
            set(f, "isIncomeCategory", json!(false));
            set(f, "isHidden", json!(false));
            set(f, "isActive", json!(true));
            set(f, "sortOrder", json!(client.list(t)?.len()));
        }
        EntityType::Transaction => {
            let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
            set(f, "date", json!(today));
            let date = f["date"].clone();
            set(f, "valueDate", date);
            let income = f.get("amount").and_then(Value::as_f64).is_some_and(|a| a > 0.0);
            set(f, "type", json!(if income { "INCOME" } else { "EXPENSE" }));
            set(f, "runningBalance", json!(0));
            if !f.contains_key("accountId") {
                match only(EntityType::Account)? {
                    Some(a) => {
                        f.insert("accountId".into(), json!(a));
                    }
                    None => bail!("a transaction needs an account: add `account=NAME` (see `finwise accounts ls`)"),
                }
            }
            if !f.contains_key("amount") {
                bail!("a transaction needs an amount: add `amount=-12.50`");
            }
        }
        // no defaults beyond the registry's; listed, so that a new type must be decided here
        EntityType::Recipient | EntityType::Tag | EntityType::AutomationRule | EntityType::PlanningTransaction => {}
    }
    Ok(())
}

fn entity(ctx: &Ctx, t: EntityType, cmd: EntityCommand) -> Result<()> {
    let client = ctx.client()?;
    let (one, plural) = noun(t);
    match cmd {
        EntityCommand::Add { fields: args } => {
            let mut f = fields(&client, t, &args)?;
            defaults(&client, t, &mut f)?;
            let e = client.create(t, Value::Object(f))?;
            if ctx.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("added {one} {} ({}); queued: run `finwise sync` to send it", label(&e), short(&e));
            }
        }
        EntityCommand::Edit { id, fields: args } => {
            let current = find(&client, t, &id)?;
            let id = current["id"].as_str().unwrap_or_default().to_owned();
            let f = fields(&client, t, &args)?;
            let e = client.update(t, &id, Value::Object(f))?;
            if ctx.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("changed {one} {} ({}); queued: run `finwise sync` to send it", label(&e), short(&e));
            }
        }
        EntityCommand::Rm { id } => {
            let current = find(&client, t, &id)?;
            let id = current["id"].as_str().unwrap_or_default().to_owned();
            client.delete(t, &id)?;
            if ctx.json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!(
                    "deleted {one} {} ({}); queued: run `finwise sync` to send it",
                    label(&current),
                    short(&current)
                );
            }
        }
        EntityCommand::Show { id } => {
            let e = find(&client, t, &id)?;
            if ctx.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                let width = e.keys().map(|k| k.len()).max().unwrap_or(0);
                for (k, v) in &e {
                    println!("{k:width$}  {}", cell(v));
                }
            }
        }
        EntityCommand::Ls => {
            let list = client.list(t)?;
            if ctx.json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no {plural} yet: add one with `finwise {plural} add name=...` (or `finwise sync` to fetch)");
            } else {
                table(&client, t, &list)?;
            }
        }
    }
    Ok(())
}

fn short(e: &Map<String, Value>) -> String {
    e["id"].as_str().unwrap_or_default().chars().take(8).collect()
}

fn label(e: &Map<String, Value>) -> String {
    for k in ["name", "description", "payee"] {
        if let Some(s) = e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            return format!("'{s}'");
        }
    }
    String::new()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn table(client: &Client, t: EntityType, list: &[Map<String, Value>]) -> Result<()> {
    let names = |rt: EntityType| -> Result<HashMap<String, String>> {
        Ok(client
            .list(rt)?
            .into_iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap_or_default().to_owned(),
                    e.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                )
            })
            .collect())
    };
    let (headers, cols): (Vec<&str>, Vec<(&str, Option<EntityType>)>) = match t {
        EntityType::Account => (
            vec!["ID", "NAME", "TYPE", "BALANCE", "GROUP", "UPDATED"],
            vec![
                ("id", None),
                ("name", None),
                ("accountType", None),
                ("balance", None),
                ("accountGroupId", Some(EntityType::AccountGroup)),
                ("updated_at", None),
            ],
        ),
        EntityType::Category => (
            vec!["ID", "NAME", "BUDGETED", "AVAILABLE", "GROUP", "UPDATED"],
            vec![
                ("id", None),
                ("name", None),
                ("budgeted", None),
                ("available", None),
                ("categoryGroupId", Some(EntityType::CategoryGroup)),
                ("updated_at", None),
            ],
        ),
        EntityType::Transaction => (
            vec!["ID", "DATE", "ACCOUNT", "AMOUNT", "DESCRIPTION", "CATEGORY", "UPDATED"],
            vec![
                ("id", None),
                ("date", None),
                ("accountId", Some(EntityType::Account)),
                ("amount", None),
                ("description", None),
                ("categoryId", Some(EntityType::Category)),
                ("updated_at", None),
            ],
        ),
        _ => (vec!["ID", "NAME", "UPDATED"], vec![("id", None), ("name", None), ("updated_at", None)]),
    };
    let mut lookups: HashMap<EntityType, HashMap<String, String>> = HashMap::new();
    for (_, rt) in &cols {
        if let Some(rt) = rt {
            if !lookups.contains_key(rt) {
                lookups.insert(*rt, names(*rt)?);
            }
        }
    }
    let rows = list
        .iter()
        .map(|e| {
            cols.iter()
                .map(|(k, rt)| {
                    let v = e.get(*k).unwrap_or(&Value::Null);
                    match (k, rt) {
                        (&"id", _) => short(e),
                        (_, Some(rt)) => {
                            let id = v.as_str().unwrap_or_default();
                            lookups[rt].get(id).cloned().unwrap_or_else(|| id.chars().take(8).collect())
                        }
                        _ => cell(v),
                    }
                })
                .collect()
        })
        .collect();
    print_table(&headers, rows);
    Ok(())
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

// ----- sync and status -----

/// A progress bar on stderr (drawn only on a terminal) fed by the client's progress events.
fn progress_options(enabled: bool) -> ClientOptions {
    let mut opts = ClientOptions::default();
    if !enabled {
        return opts;
    }
    let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::new(Mutex::new(None));
    opts.progress = Some(Arc::new(move |p: &Progress| {
        let mut slot = bar.lock().expect("progress lock");
        match p {
            Progress::Pushing { sent, total } => {
                let b = slot.get_or_insert_with(|| new_bar(Some(*total), "sending"));
                b.set_length((*total).max(*sent));
                b.set_position(*sent);
                if sent >= total {
                    b.finish_and_clear();
                    *slot = None;
                }
            }
            Progress::Loading { received, total } => {
                let b = slot.get_or_insert_with(|| new_bar(*total, "loading"));
                b.set_position(*received);
            }
            Progress::Loaded { .. } => {
                if let Some(b) = slot.take() {
                    b.finish_and_clear();
                }
            }
        }
    }));
    opts
}

fn new_bar(total: Option<u64>, what: &'static str) -> ProgressBar {
    match total {
        Some(n) => {
            let b = ProgressBar::new(n);
            if let Ok(s) = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} ({eta})") {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_message(what);
            b
        }
        None => {
            let b = ProgressBar::new_spinner();
            b.set_message(format!("{what}…"));
            b
        }
    }
}

fn describe(r: &SyncReport) -> String {
    let mut parts = vec![format!("sent {}", r.acked)];
    if r.duplicates > 0 {
        parts.push(format!("{} already on the server", r.duplicates));
    }
    if r.lost > 0 {
        parts.push(format!("{} overruled by newer versions", r.lost));
    }
    parts.push(format!("received {}", r.received));
    if r.retried > 0 {
        parts.push(format!("{} to retry", r.retried));
    }
    if r.failed > 0 {
        parts.push(format!("{} refused (see `finwise status`)", r.failed));
    }
    let state = match r.converged {
        Some(true) => "in sync with the server".to_owned(),
        Some(false) => "NOT in sync with the server after a full resync".to_owned(),
        None => "changes still queued".to_owned(),
    };
    format!("{}; cursor {}; {state}", parts.join(", "), r.cursor.map(|c| c.to_string()).unwrap_or_else(|| "-".into()))
}

fn change_line(c: &Change) -> String {
    let (one, _) = noun(c.entity_type);
    let arrow = if c.origin == Origin::Remote { "←" } else { "→" };
    let what = match c.operation {
        Operation::Create => "added",
        Operation::Update => "changed",
        Operation::Delete => "deleted",
    };
    let name = c.entity.as_ref().map(label).unwrap_or_default();
    let id: String = c.id.chars().take(8).collect();
    format!("{arrow} {one} {name} ({id}) {what}").replace("  ", " ")
}

async fn sync(ctx: &Ctx, a: SyncArgs) -> Result<()> {
    let mut opts = progress_options(!a.watch && !ctx.json && std::io::stderr().is_terminal());
    if a.watch {
        // In watch mode, say when queued changes went out (they may come from other shells).
        let json_out = ctx.json;
        opts.progress = Some(Arc::new(move |p: &Progress| {
            if let Progress::Pushing { sent, total } = p {
                if sent >= total {
                    if json_out {
                        println!("{}", json!({"event": "sent", "count": sent}));
                    } else {
                        println!("→ sent {sent} queued change{}", if *sent == 1 { "" } else { "s" });
                    }
                }
            }
        }));
    }
    let client = ctx.client_with(opts)?;
    let server = client.auth().server();
    if a.retry_failed {
        let n = client.retry_failed()?;
        if !ctx.json {
            println!("{n} failed entr{} queued again", if n == 1 { "y" } else { "ies" });
        }
    }
    if a.full {
        client.pull_only(true).await.map_err(|e| explain(e, &server))?;
    }
    if !a.watch {
        let r = client.sync_once().await.map_err(|e| explain(e, &server))?;
        if ctx.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", describe(&r));
        }
        return Ok(());
    }
    // Watch: print changes and connection state until Ctrl-C.
    let json_out = ctx.json;
    let mut changes = client.changes();
    let mut conn = client.connection();
    let printer = tokio::spawn(async move {
        let mut shown: Option<ConnectionState> = None;
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => {
                        if json_out {
                            println!("{}", json!({"event": "change", "entity_type": c.entity_type, "id": c.id, "operation": c.operation, "origin": c.origin, "entity": c.entity}));
                        } else {
                            println!("{}", change_line(&c));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("({n} changes not shown)"),
                    Err(_) => break,
                },
                r = conn.changed() => {
                    if r.is_err() { break; }
                    let s = *conn.borrow_and_update();
                    if s == ConnectionState::Connecting || shown == Some(s) {
                        continue;
                    }
                    shown = Some(s);
                    if json_out {
                        println!("{}", json!({"event": "connection", "state": s}));
                    } else {
                        match s {
                            ConnectionState::Online => println!("● online"),
                            ConnectionState::Connecting => {}
                            ConnectionState::Offline => println!("○ offline (changes are queued; reconnecting…)"),
                        }
                    }
                }
            }
            let _ = std::io::stdout().flush();
        }
    });
    if !ctx.json {
        println!("watching {} on {} (Ctrl-C to stop)", client.auth().session().tenant_name.unwrap_or_default(), server);
    }
    let res = client
        .watch(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    printer.abort();
    res.map_err(|e| explain(e, &server))
}

fn state_word(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Online => "online",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Offline => "offline, reconnecting",
    }
}

async fn status(ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    let auth = client.auth();
    let session = auth.session();
    let st = client.status()?;
    let reachable = auth.server_reachable().await;
    let failed = client.queue_entries(EntryStatus::Failed)?;
    let counts = client.counts()?;
    if ctx.json {
        let v = json!({
            "server": session.server,
            "server_reachable": reachable,
            "user": session.email,
            "tenant": session.tenant,
            "tenant_name": session.tenant_name,
            "status": st,
            "failed_entries": failed,
            "entities": counts.iter().map(|(t, n)| (t.as_str().to_owned(), json!(n))).collect::<Map<String, Value>>(),
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!("server       {} ({})", session.server, if reachable { "reachable" } else { "unreachable" });
    println!("user         {}", session.email);
    println!("tenant       {} ({})", session.tenant_name.unwrap_or_default(), session.tenant.unwrap_or_default());
    match &st.watcher {
        Some(w) => println!(
            "connection   {} via `finwise sync --watch` (pid {}) since {}",
            state_word(w.state),
            w.pid,
            w.since
        ),
        None => println!(
            "connection   none (no `finwise sync --watch` running on this store; `finwise sync` connects once)"
        ),
    }
    println!(
        "queue        {} pending, {} in flight, {} failed",
        st.queue.pending, st.queue.processing, st.queue.failed
    );
    println!("cursor       {}", st.cursor.map(|c| c.to_string()).unwrap_or_else(|| "none (never synced)".into()));
    println!("last sync    {}", st.last_sync.as_deref().unwrap_or("never"));
    let conv = match st.converged {
        Some(true) if st.queue.pending == 0 => "yes (digest equals the server's at the last sync)",
        Some(true) => "was at the last sync; local changes queued since",
        Some(false) => "NO: run `finwise sync --full`",
        None => "not checked yet",
    };
    println!("in sync      {conv}");
    println!("digest       {}", st.local_digest);
    if let Some(off) = st.clock_offset_ms.filter(|o| o.abs() >= 2000) {
        let dir = if off > 0 { "ahead of" } else { "behind" };
        let warn = if off > 240_000 { ": changes will be refused (clock_skew); set the clock right" } else { "" };
        println!("clock        {:.0} s {dir} the server's{warn}", off.abs() as f64 / 1000.0);
    }
    if let Some(e) = st.last_error.as_deref().filter(|e| !e.is_empty()) {
        println!("last error   {e}");
    }
    let summary: Vec<String> =
        counts.iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{n} {}", noun(*t).1)).collect();
    println!("local data   {}", if summary.is_empty() { "empty".to_owned() } else { summary.join(", ") });
    if !failed.is_empty() {
        println!("\nfailed entries (kept for inspection; `finwise sync --retry-failed` sends them again):");
        let rows = failed
            .iter()
            .map(|e| {
                vec![
                    e.id.chars().take(8).collect(),
                    e.entity_type.to_string(),
                    e.entity_id.chars().take(8).collect(),
                    e.operation.as_str().to_owned(),
                    e.reason.clone().unwrap_or_default(),
                    e.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["ENTRY", "TYPE", "ENTITY", "OP", "REASON", "DETAIL"], rows);
    }
    if !reachable {
        println!("\nthe server is unreachable: changes stay queued; run `finwise sync` when it is back");
    }
    Ok(())
}
