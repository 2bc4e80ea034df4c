//! `finwise import-legacy`: imports a FinWise 0.4 (Python backend) data directory.
//!
//! 0.4 keeps a central database (`users.db`: users, tenants) and one file per tenant
//! (`finwiseTenantDB_<uuid>.db`, one table per entity type, camelCase columns). See
//! `finwise-0.4-storage.md`. Users keep their id and bcrypt hash (verified at login, then
//! rehashed with Argon2id); tenants keep id, name, owner and timestamps; every entity keeps its
//! fields and its `updatedAt` as the version (`updated_at`). Columns are read by name, so files
//! with an older schema (missing columns) import with the defaults. Running it again is safe:
//! users and tenants are updated in place, entities are written only when newer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Args;
use finwise_server::{
    auth::{AuthStore, Tenant, User},
    legacy::{naive_iso, open_ro, read_tenant, rows, write_entities},
    storage::{
        sqlite::{create_private_dir, DataDir, SqliteTenant},
        TenantDb,
    },
    TenantId,
};

#[derive(Args)]
pub struct ImportArgs {
    /// The 0.4 backend's data: a directory holding `db/users.db` (or `users.db`) and
    /// `tenant_databases/` (beside it or one level up), or the backend root containing `data/`.
    #[arg(long, required_unless_present = "central_db")]
    pub from: Option<PathBuf>,
    /// The central database file, when it is not found under --from (0.4: HOST_DB_PATH/users.db).
    #[arg(long)]
    pub central_db: Option<PathBuf>,
    /// The tenant directory, when it is not found under --from (0.4: TENANT_DATABASE_DIR / HOST_TENANT_DB_PATH).
    #[arg(long)]
    pub tenant_dir: Option<PathBuf>,
    /// The data dir to import into (the server must not be running on it).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    pub users: usize,
    pub users_without_password: usize,
    pub user_settings: usize,
    pub logos: usize,
    pub tenants: usize,
    pub entities: BTreeMap<&'static str, usize>,
    pub unchanged: usize,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// The image format of a file by its first bytes (the file name says nothing).
fn image_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpeg")
    } else {
        None
    }
}

/// Finds the central database and the tenant directory under `from`.
pub fn locate(
    from: &Path,
    central: Option<&Path>,
    tenants: Option<&Path>,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    if let Some(c) = central.filter(|c| !c.is_file()) {
        bail!("{}: no such file (--central-db)", c.display());
    }
    if let Some(t) = tenants.filter(|t| !t.is_dir()) {
        bail!("{}: no such directory (--tenant-dir)", t.display());
    }
    if !from.is_dir() && central.is_none() {
        bail!("{} is not a directory (give the 0.4 data directory with --from)", from.display());
    }
    let central = match central {
        Some(c) => c.to_path_buf(),
        None => ["users.db", "db/users.db", "data/db/users.db"]
            .iter()
            .map(|p| from.join(p))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no 0.4 central database under {} (looked for users.db, db/users.db, data/db/users.db); give it with --central-db",
                    from.display()
                )
            })?,
    };
    let tenants = match tenants {
        Some(t) => Some(t.to_path_buf()),
        None if !from.is_dir() => None,
        None => ["tenant_databases", "data/tenant_databases", "../tenant_databases"]
            .iter()
            .map(|p| from.join(p))
            .find(|p| p.is_dir()),
    };
    Ok((central, tenants))
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let data = super::data_dir(a.data_dir.clone());
    let from = a.from.clone().unwrap_or_else(|| PathBuf::from("."));
    let s = run(&from, a.central_db.as_deref(), a.tenant_dir.as_deref(), &data, true)?;
    println!("imported into {}:", data.display());
    println!(
        "  users:    {} ({} without a password: they cannot log in until one is set)",
        s.users, s.users_without_password
    );
    println!("  settings: {} (the 0.4 web app's log level, categories and history retention)", s.user_settings);
    println!("  tenants:  {} ({} logo files)", s.tenants, s.logos);
    for (t, n) in &s.entities {
        println!("  {t:<20} {n}");
    }
    if s.unchanged > 0 {
        println!("  unchanged (already imported, same or newer here): {}", s.unchanged);
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
    for e in &s.errors {
        eprintln!("error: {e}");
    }
    if !s.errors.is_empty() {
        bail!("{} item(s) could not be imported (listed above); everything else was", s.errors.len());
    }
    println!(
        "users log in with their 0.4 passwords; start the server with: finwise serve --data-dir {}",
        data.display()
    );
    Ok(())
}

/// Imports `from` into the data dir `data`; `progress` draws a progress bar on a terminal.
pub fn run(
    from: &Path,
    central: Option<&Path>,
    tenant_dir: Option<&Path>,
    data: &Path,
    progress: bool,
) -> anyhow::Result<Summary> {
    let (central, tenant_dir) = locate(from, central, tenant_dir)?;
    let src = open_ro(&central)?;
    for table in ["users", "tenants"] {
        let ok = src
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |_| Ok(()))
            .is_ok();
        if !ok {
            bail!("{} has no '{table}' table: it is not a FinWise 0.4 central database", central.display());
        }
    }
    let dir = DataDir { root: data.to_path_buf() };
    let _lock = dir.lock("import-legacy")?;
    create_private_dir(&dir.tenants_dir()).with_context(|| format!("cannot create {}", data.display()))?;
    let auth = AuthStore::open(&dir.auth_db()).map_err(|e| anyhow::anyhow!("{}: {e}", dir.auth_db().display()))?;
    let mut s = Summary::default();

    // Users.
    let mut imported_users = Vec::new();
    for row in rows(&src, "users")? {
        let get = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let Some(uuid) = get("uuid") else {
            s.errors.push("a user row without a uuid".into());
            continue;
        };
        let Some(email) = get("email") else {
            s.errors.push(format!("user {uuid}: no e-mail"));
            continue;
        };
        let mut name = get("name").unwrap_or_else(|| email.split('@').next().unwrap_or("user").to_owned());
        // Names are unique here (0.4 only checked at registration): a clash gets a suffix.
        if let Some((other, _)) = auth.find_login(&name)?.filter(|(u, _)| u.uuid != uuid) {
            let renamed = format!("{name} ({})", &uuid[..8.min(uuid.len())]);
            s.warnings.push(format!("user {uuid}: name '{name}' is taken by {}; imported as '{renamed}'", other.uuid));
            name = renamed;
        }
        if let Some((other, _)) = auth.find_login(&email)?.filter(|(u, _)| u.uuid != uuid) {
            s.errors.push(format!("user {uuid}: e-mail {email} already belongs to user {} here", other.uuid));
            continue;
        }
        let hash = match get("hashed_password") {
            Some(h) => h,
            None => {
                s.users_without_password += 1;
                // Matches no password: the account exists (tenants keep their owner) but cannot log in.
                "!no-password".to_owned()
            }
        };
        let user = User {
            name,
            email,
            uuid: uuid.clone(),
            created_at: naive_iso(get("createdAt")),
            updated_at: naive_iso(get("updatedAt")),
        };
        auth.import_user(&user, &hash)?;
        imported_users.push(uuid);
        s.users += 1;
    }

    // The 0.4 web app's settings (log level, categories, history retention) of imported users.
    for row in rows(&src, "user_settings")? {
        let get = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let Some(user) = get("user_id").filter(|u| imported_users.contains(u)) else { continue };
        let categories = match row.get("log_categories") {
            Some(serde_json::Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let settings = finwise_server::settings::UserSettings {
            id: get("id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            user_id: user,
            log_level: get("log_level")
                .filter(|l| finwise_server::settings::LOG_LEVELS.contains(&l.as_str()))
                .unwrap_or_else(|| "INFO".into()),
            log_categories: categories,
            history_retention_days: row.get("history_retention_days").and_then(|v| v.as_i64()).unwrap_or(60),
            created_at: naive_iso(get("created_at")),
            updated_at: naive_iso(get("updated_at")),
        };
        auth.import_user_settings(&settings)?;
        s.user_settings += 1;
    }

    // Tenants, with their files.
    let mut work = Vec::new();
    for row in rows(&src, "tenants")? {
        let get = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let raw = get("uuid").unwrap_or_default();
        let Some(id) = TenantId::parse(&raw) else {
            s.errors.push(format!("tenant '{raw}': the id is not a canonical lowercase UUID; not imported"));
            continue;
        };
        let Some(owner) = get("user_id").filter(|u| imported_users.contains(u)) else {
            s.errors.push(format!(
                "tenant {id}: its owner {} is not among the users; not imported",
                get("user_id").unwrap_or_default()
            ));
            continue;
        };
        let tenant = Tenant {
            name: get("name").unwrap_or_else(|| "Imported".into()),
            uuid: id.as_str().to_owned(),
            user_id: owner,
            created_at: naive_iso(get("createdAt")),
            updated_at: naive_iso(get("updatedAt")),
        };
        auth.import_tenant(&tenant)?;
        s.tenants += 1;
        // 0.4 kept logos beside the tenant databases: logo_storage/<tenant>/<uuid>.png|jpg
        let logos = tenant_dir.as_ref().and_then(|d| d.parent()).map(|d| d.join("logo_storage").join(id.as_str()));
        if let Some(Ok(files)) = logos.filter(|d| d.is_dir()).map(std::fs::read_dir) {
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let bytes = std::fs::read(f.path()).unwrap_or_default();
                let image = matches!(image_format(&bytes), Some("png" | "jpeg"));
                if !finwise_server::logos::valid_name(&name) || !image || bytes.len() > 10 * 1024 * 1024 {
                    s.warnings.push(format!("tenant {id}: logo file {name} is not a PNG or JPEG logo; skipped"));
                    continue;
                }
                let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
                auth.import_logo(&(id.as_str().to_owned(), name, data, finwise_server::auth::naive_now()))?;
                s.logos += 1;
            }
        }
        let file = tenant_dir.as_ref().map(|d| d.join(format!("finwiseTenantDB_{id}.db"))).filter(|f| f.is_file());
        match file {
            Some(f) => work.push((id, f)),
            None => {
                s.warnings.push(format!("tenant {id} ('{}') has no database file: imported without data", tenant.name))
            }
        }
    }
    if let Some(dir) = &tenant_dir {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = n.strip_prefix("finwiseTenantDB_").and_then(|r| r.strip_suffix(".db")) {
                    if !work.iter().any(|(t, _)| t.as_str() == id) {
                        s.warnings.push(format!(
                            "{n}: no tenant row in the central database (a deleted tenant in 0.4); skipped"
                        ));
                    }
                }
            }
        }
    }

    // Read every tenant first (counting for the progress bar), then write.
    let mut loaded = Vec::new();
    let mut total = 0u64;
    for (id, file) in work {
        let read = open_ro(&file).and_then(|conn| read_tenant(&conn).with_context(|| file.display().to_string()));
        match read {
            Ok(t) => {
                total += t.entities.len() as u64;
                s.warnings.extend(t.warnings.iter().map(|w| format!("tenant {id}: {w}")));
                s.errors.extend(t.errors.iter().map(|e| format!("tenant {id}: {e}")));
                loaded.push((id, t.entities));
            }
            Err(e) => s.errors.push(format!("tenant {id}: {e:#}")),
        }
    }
    let bar = if progress { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:20} [{bar:40}] {pos}/{len} entities ({eta})")
            .expect("progress template")
            .progress_chars("=> "),
    );
    for (id, entities) in loaded {
        bar.set_message(id.as_str()[..8].to_owned());
        let path = dir.tenant_db(&id);
        let mut db: Box<dyn TenantDb> =
            Box::new(SqliteTenant::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        let (written, unchanged) = write_entities(&mut *db, &entities)
            .map_err(|e| anyhow::anyhow!("tenant {id}: writing {}: {e}", path.display()))?;
        for t in written {
            *s.entities.entry(t.collection()).or_default() += 1;
        }
        s.unchanged += unchanged;
        bar.inc(entities.len() as u64);
    }
    bar.finish_and_clear();
    Ok(s)
}
