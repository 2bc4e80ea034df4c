//! `finwise`: the FinWise Sync server and its tools.

mod client_cmd;
mod ops;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use finwise_server::Config;

/// mimalloc instead of glibc malloc: the per-tenant writer threads free what connection tasks
/// allocated (and the reverse); glibc serialises that on arena locks and keeps a 64 MiB arena per
/// writer thread. It also replaces `malloc` for SQLite and the C library (the `override`
/// feature), without transparent huge pages (`no_thp`). See docs/PERFORMANCE.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!(concat!(env!("OUT_DIR"), "/mi_options.rs"));

/// mimalloc's purge delay in milliseconds (its default is 1 s; arena ranges wait ten times it).
const PURGE_DELAY_MS: i64 = 100;

/// How often the purge thread makes mimalloc hand freed memory back to the OS.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Freed memory goes back to the OS within about a second, without a system call for every
/// page freed under load:
/// - mimalloc purges a freed range only when its delay has passed *and* some thread allocates
///   again, so after a burst, with every thread idle, it would stay resident for good;
/// - a purge delay of 0 (the setting before) returned each page at once, which under ingest cost
///   12 % of the connection threads in `madvise`, page faults and TLB shootdowns;
/// - so the delay is 100 ms and a thread of ours forces the purge once per second.
///
/// `MIMALLOC_PURGE_DELAY` in the environment keeps its own value (the purge thread still runs).
/// Measured in docs/PERFORMANCE.md ("Tenants", and "Issue 21, ingest: the allocator and the
/// writers' precedence").
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it is called once,
        // before any thread of ours exists, with an index read from mimalloc.h by build.rs.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    let purge = || {
        // mimalloc collects nothing for a thread whose heap is not set up yet: one allocation
        // sets it up
        drop(std::hint::black_box(vec![0u8; 64]));
        loop {
            std::thread::sleep(PURGE_EVERY);
            // SAFETY: `mi_collect` takes no pointers; it collects the calling thread's own heap
            // and, forced, purges every arena range that waits for it, in all arenas.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    };
    if let Err(e) = std::thread::Builder::new().name("mem-purge".into()).spawn(purge) {
        eprintln!("warning: no memory purge thread ({e}); freed memory returns to the OS more slowly");
    }
}

#[derive(Parser)]
#[command(name = "finwise", version, about = "FinWise Sync: offline-first sync for personal-finance data")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "FINWISE_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    client: client_cmd::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server (HTTP + WebSocket on one port).
    Serve(ServeArgs),
    /// Print the effective server configuration (secrets masked) and where each value came from.
    Config(ServeArgs),
    /// Take a consistent copy of every database while the server runs.
    Backup(ops::backup::BackupArgs),
    /// Restore a backup into a data dir (the server must not be running on it).
    Restore(ops::backup::RestoreArgs),
    /// Import a FinWise 0.4 (Python backend) data directory.
    ImportLegacy(ops::legacy::ImportArgs),
    /// Check a data dir (or a PostgreSQL database) and print what is wrong and how to fix it.
    Doctor(ops::doctor::DoctorArgs),
    /// Copy a data dir into an empty PostgreSQL database, or a PostgreSQL database into a new data dir.
    Migrate(ops::migrate::MigrateArgs),
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
}

/// Server settings given as flags. Each one overrides the same key from the environment
/// (`FINWISE_<KEY>`), which overrides the config file (`--config`), which overrides the default;
/// `finwise config` prints the result.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML configuration file (keys as printed by `finwise config`).
    #[arg(long, env = "FINWISE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8000; env FINWISE_ADDR].
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Directory for auth.db, the tenant databases and the JWT secret [default: data; env FINWISE_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep all state in this PostgreSQL database instead of the data dir, e.g.
    /// postgres://finwise@127.0.0.1:5432/finwise [env FINWISE_DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
    /// Let FinWise 0.4 clients without a token use the server (no authentication for them)
    /// [env FINWISE_ALLOW_LEGACY_CLIENTS].
    #[arg(long)]
    allow_legacy_clients: bool,
    /// JWT signing secret (default: generated and kept in <data-dir>/jwt.secret) [env FINWISE_JWT_SECRET].
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Access token lifetime in seconds [default: 900; env FINWISE_ACCESS_TOKEN_TTL].
    #[arg(long)]
    access_token_ttl: Option<u64>,
    /// Refresh token lifetime in seconds [default: 60 days; env FINWISE_REFRESH_TOKEN_TTL].
    #[arg(long)]
    refresh_token_ttl: Option<u64>,
    /// Refuse new registrations [env FINWISE_DISABLE_REGISTRATION or FINWISE_REGISTRATION_ENABLED=false].
    #[arg(long)]
    disable_registration: bool,
    /// Largest accepted `updated_at` lead over the server clock, in seconds [default: 300; env FINWISE_MAX_CLOCK_SKEW].
    #[arg(long)]
    max_clock_skew: Option<u64>,
    /// Days tombstones are kept for delta sync [default: 90; env FINWISE_TOMBSTONE_DAYS].
    #[arg(long)]
    tombstone_days: Option<u64>,
    /// Messages per second per connection (token bucket; burst is twice this)
    /// [default: 5000; env FINWISE_MESSAGES_PER_SECOND].
    #[arg(long)]
    messages_per_second: Option<u32>,
    /// Seconds a tenant may be idle before its database file is closed [default: 60; env FINWISE_IDLE_TENANT_SECS].
    #[arg(long)]
    idle_tenant_secs: Option<u64>,
    /// Serve the web client from this directory instead of the one built into the binary
    /// (development) [env FINWISE_WEB_DIR].
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Allowed CORS origins, comma-separated (default: any origin) [env FINWISE_CORS_ORIGINS or CORS_ORIGINS].
    #[arg(long, value_delimiter = ',')]
    cors_origins: Option<Vec<String>>,
}

impl ServeArgs {
    fn flags(&self) -> finwise_server::config::Settings {
        finwise_server::config::Settings {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            allow_legacy_clients: self.allow_legacy_clients.then_some(true),
            jwt_secret: self.jwt_secret.clone(),
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            registration_enabled: self.disable_registration.then_some(false),
            max_clock_skew: self.max_clock_skew,
            tombstone_days: self.tombstone_days,
            messages_per_second: self.messages_per_second,
            idle_tenant_secs: self.idle_tenant_secs,
            web_dir: self.web_dir.clone(),
            cors_origins: self.cors_origins.clone(),
            ..Default::default()
        }
    }

    /// The effective configuration: flags > environment > file > defaults.
    fn resolve(&self) -> anyhow::Result<finwise_server::config::Resolved> {
        use finwise_server::config::{resolve, Settings};
        let file = match &self.config {
            Some(p) => Settings::from_file(p)?,
            None => Settings::default(),
        };
        let env = Settings::from_env(|k| std::env::var(k).ok())?;
        Ok(resolve(Config::default(), &file, &env, &self.flags()))
    }
}

/// Runs blocking operator work on a thread of its own.
fn off_runtime(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    std::thread::spawn(f).join().map_err(|_| anyhow::anyhow!("the command panicked"))?
}

fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FINWISE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Every command reports a failure the same way: `error: ` and the error with its causes on one
/// line, exit code 1; never a backtrace, whatever `RUST_BACKTRACE` says (these are messages for
/// people, not crashes).
fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = {
        use clap::{CommandFactory, FromArgMatches};
        let matches = client_cmd::with_field_help(Cli::command()).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    let json = cli.client.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(finwise_server::writer::yield_to_writers)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // with --json a failure is JSON too, on stdout where the results go
        Err(e) if json => {
            println!("{}", serde_json::json!({"error": format!("{e:#}")}));
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Client commands print their own results; only warnings go to the log.
    let level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "error" };
    let level = if matches!(
        cli.command,
        Command::ImportLegacy(_) | Command::Backup(_) | Command::Restore(_) | Command::Doctor(_)
    ) {
        "warn"
    } else {
        level
    };
    init_logging(cli.log_json, level);
    match cli.command {
        Command::Client(cmd) => client_cmd::run(cli.client, cmd).await,
        Command::Config(args) => {
            let r = args.resolve()?;
            print!("{}", r.to_toml());
            Ok(())
        }
        Command::Backup(a) => ops::backup::backup(a),
        Command::Restore(a) => ops::backup::restore(a),
        Command::ImportLegacy(a) => ops::legacy::import(a),
        // the PostgreSQL driver blocks: not on the async runtime's thread
        Command::Doctor(a) => off_runtime(move || ops::doctor::doctor(a)),
        Command::Migrate(a) => off_runtime(move || ops::migrate::migrate(a)),
        Command::Serve(args) => {
            let config = args.resolve()?.config;
            // held until the server has stopped: one process per data dir (on PostgreSQL, any
            // number of servers share the database, and the data dir holds nothing that matters)
            let _lock = match config.database_url {
                None => Some(finwise_server::storage::sqlite::DataDir { root: config.data_dir.clone() }.lock("serve")?),
                Some(_) => None,
            };
            let listener = tokio::net::TcpListener::bind(config.addr).await.map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                    " (another program listens there: stop it, or choose another port with --addr)"
                } else {
                    ""
                };
                anyhow::anyhow!("cannot listen on {}: {e}{hint}", config.addr)
            })?;
            let app = finwise_server::App::open(config)?;
            // Tests and scripts read the actual port from this line: the data dir is open and
            // migrated by now.
            println!("listening on http://{}", listener.local_addr()?);
            finwise_server::run(listener, app, finwise_server::shutdown_signal()).await
        }
    }
}
