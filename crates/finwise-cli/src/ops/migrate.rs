//! `finwise migrate`: a data dir into an empty PostgreSQL database, or a PostgreSQL database
//! into a new data dir ([`finwise_server::migrate`] does the copying and the verification).

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use finwise_server::storage::{
    data_dir::DataDir,
    postgres::PgStore,
    sqlite::{create_private_dir, SqliteStore},
    Store,
};

#[derive(Args)]
pub struct MigrateArgs {
    /// Copy from this data dir (the server must be stopped: its lock is taken).
    #[arg(long, conflicts_with = "database_url", requires = "to_database_url")]
    pub data_dir: Option<PathBuf>,
    /// ... into this empty PostgreSQL database (migrated first).
    #[arg(long, conflicts_with = "to_data_dir")]
    pub to_database_url: Option<String>,
    /// Copy from this PostgreSQL database (stop the servers on it first) ...
    #[arg(long, requires = "to_data_dir")]
    pub database_url: Option<String>,
    /// ... into this new (absent or empty) data dir.
    #[arg(long)]
    pub to_data_dir: Option<PathBuf>,
}

fn pg(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(PgStore::open(url, 4, Duration::from_secs(30)).map_err(|e| anyhow::anyhow!("{e}"))?))
}

pub fn migrate(a: MigrateArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut say = |line: String| println!("{line}");
    let report = match (a.data_dir, a.to_database_url, a.database_url, a.to_data_dir) {
        (Some(dir), Some(url), None, None) => {
            let data = DataDir { root: dir };
            if !data.auth_db().exists() {
                anyhow::bail!("{} holds no auth.db: is this the server's data dir?", data.root.display());
            }
            let _lock = data.lock("migrate")?;
            let from: Arc<dyn Store> = Arc::new(SqliteStore::open(data).map_err(|e| anyhow::anyhow!("{e}"))?);
            let to = pg(&url)?;
            finwise_server::migrate::copy(&*from, &*to, &mut say)?
        }
        (None, None, Some(url), Some(dir)) => {
            let data = DataDir { root: dir };
            if data.root.exists() && std::fs::read_dir(&data.root)?.next().is_some() {
                anyhow::bail!("{} is not empty: migrate into a new data dir", data.root.display());
            }
            create_private_dir(&data.root)?;
            let _lock = data.lock("migrate")?;
            let from = pg(&url)?;
            let to: Arc<dyn Store> = Arc::new(SqliteStore::open(data).map_err(|e| anyhow::anyhow!("{e}"))?);
            finwise_server::migrate::copy(&*from, &*to, &mut say)?
        }
        _ => anyhow::bail!(
            "say which way: finwise migrate --data-dir DIR --to-database-url URL, or finwise migrate --database-url URL --to-data-dir DIR"
        ),
    };
    println!(
        "migrated {} users, {} tenants, {} stored versions and {} idempotency records in {:.1} s",
        report.users,
        report.tenants,
        report.entities,
        report.entries,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
