//! `finwise backup` and `finwise restore`.
//!
//! A backup is a directory with `auth.db`, `tenants/<id>.db`, `jwt.secret` and `MANIFEST.json`.
//! Each database is copied with `VACUUM INTO` on a read-only connection: SQLite writes a
//! consistent snapshot of the file as of one read transaction, while the server keeps writing
//! (WAL readers never block the writer). `auth.db` is copied first, so a tenant created during
//! the backup may have its file without its row; `finwise doctor` reports such a file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use finwise_server::storage::sqlite::{create_private_dir, DataDir};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

#[derive(Args)]
pub struct BackupArgs {
    /// Directory to write the backup to (created; must be empty if it exists).
    #[arg(long)]
    pub to: PathBuf,
    /// The server's data dir [default: FINWISE_DATA_DIR, the config file's data_dir, or data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A directory written by `finwise backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to restore into; must not hold a database yet (stop the server first).
    #[arg(long)]
    pub data_dir: PathBuf,
}

fn open_ro(path: &Path) -> anyhow::Result<Connection> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open {}", path.display()))?;
    c.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(c)
}

/// Copies one database consistently with `VACUUM INTO`.
pub fn copy_db(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let c = open_ro(src)?;
    let target = dst.to_str().context("backup path is not UTF-8")?;
    // VACUUM INTO fills an empty file: created private first, like the server's own files
    finwise_server::storage::sqlite::create_private_file(dst)
        .with_context(|| format!("cannot create {}", dst.display()))?;
    c.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    // VACUUM INTO does not sync the new file: a backup must survive a power cut.
    sync_path(dst)?;
    Ok(())
}

/// fsync of a file or a directory (a directory makes the names of new files in it durable).
fn sync_path(p: &Path) -> anyhow::Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", p.display()))
}

#[cfg(unix)]
fn sync_dir(p: &Path) -> anyhow::Result<()> {
    sync_path(p)
}
#[cfg(not(unix))]
fn sync_dir(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// `PRAGMA integrity_check` of a file: `Ok(())` or the first problems it reports.
pub fn integrity(path: &Path) -> anyhow::Result<Result<(), String>> {
    let c = open_ro(path)?;
    let mut stmt = c.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(Ok(()))
    } else {
        Ok(Err(rows.into_iter().take(5).collect::<Vec<_>>().join("; ")))
    }
}

#[cfg(unix)]
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
#[cfg(not(unix))]
fn owner_only(_: &Path) -> std::io::Result<()> {
    Ok(())
}

pub fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let data = DataDir { root: super::data_dir(a.data_dir) };
    // a backup has the layout of a data dir
    let to = DataDir { root: a.to };
    let auth = data.auth_db();
    if !auth.exists() {
        bail!("{} holds no auth.db: is this the server's data dir? (--data-dir)", data.root.display());
    }
    if to.root.exists() && std::fs::read_dir(&to.root)?.next().is_some() {
        bail!("{} is not empty; back up into a new directory", to.root.display());
    }
    create_private_dir(&to.tenants_dir()).with_context(|| format!("cannot create {}", to.root.display()))?;
    let started = chrono::Utc::now();
    copy_db(&auth, &to.auth_db())?;
    let mut tenants = Vec::new();
    for (id, path) in data.tenant_files()? {
        let dst = to.tenant_file(&id);
        match copy_db(&path, &dst) {
            Ok(()) => tenants.push(json!({"tenant": id, "bytes": std::fs::metadata(&dst)?.len()})),
            // Deleted between listing and copying.
            Err(_) if !path.exists() => continue,
            Err(e) => return Err(e),
        }
    }
    let secret = data.jwt_secret();
    if secret.exists() {
        std::fs::copy(&secret, to.jwt_secret())?;
        owner_only(&to.jwt_secret())?;
    }
    let manifest = json!({
        "format": "finwise-backup-1",
        "started_at": started.to_rfc3339(),
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "source": data.root.display().to_string(),
        "auth_schema_version": finwise_server::storage::sqlite::CENTRAL_SCHEMA_VERSION,
        "tenant_schema_version": finwise_server::storage::sqlite::TENANT_SCHEMA_VERSION,
        "jwt_secret": secret.exists(),
        "tenants": tenants,
    });
    std::fs::write(to.root.join("MANIFEST.json"), serde_json::to_string_pretty(&manifest)? + "\n")?;
    sync_path(&to.root.join("MANIFEST.json"))?;
    sync_dir(&to.tenants_dir())?;
    sync_dir(&to.root)?;
    println!(
        "backup of {} written to {}: auth.db, {} tenant database(s){}",
        data.root.display(),
        to.root.display(),
        tenants.len(),
        if secret.exists() { ", jwt.secret (keep it private: it signs tokens)" } else { "" }
    );
    Ok(())
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    // a backup has the layout of a data dir
    let from = DataDir { root: a.from };
    let data = DataDir { root: a.data_dir };
    let auth = from.auth_db();
    if !auth.exists() {
        bail!("{} is not a finwise backup: it holds no auth.db", from.root.display());
    }
    let _lock = data.lock("restore")?;
    if data.auth_db().exists() || !data.tenant_files()?.is_empty() {
        bail!(
            "{} already holds databases; restore into an empty directory (stop the server, move the old data dir aside)",
            data.root.display()
        );
    }
    let mut files = vec![(auth, data.auth_db())];
    for (id, path) in from.tenant_files()? {
        files.push((path, data.tenant_file(&id)));
    }
    for (src, _) in &files {
        if let Err(problem) = integrity(src)? {
            bail!("{} fails its integrity check ({problem}); nothing was restored", src.display());
        }
    }
    create_private_dir(&data.tenants_dir()).with_context(|| format!("cannot create {}", data.root.display()))?;
    for (src, dst) in &files {
        // A consistent copy again (the backup files are plain databases; this also compacts).
        copy_db(src, dst)?;
    }
    let secret = from.jwt_secret();
    if secret.exists() {
        std::fs::copy(&secret, data.jwt_secret())?;
        owner_only(&data.jwt_secret())?;
    }
    sync_dir(&data.tenants_dir())?;
    sync_dir(&data.root)?;
    println!(
        "restored {} tenant database(s) and auth.db into {}{}",
        files.len() - 1,
        data.root.display(),
        if secret.exists() {
            " (with jwt.secret: existing sessions stay valid)"
        } else {
            " (no jwt.secret in the backup: users log in again)"
        }
    );
    Ok(())
}
