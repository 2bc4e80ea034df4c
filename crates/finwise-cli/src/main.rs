//! `finwise`: the FinWise Sync server and its tools.

mod client_cmd;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use finwise_server::Config;

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
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "FINWISE_ADDR", default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Directory for auth.db, the tenant databases and the JWT secret.
    #[arg(long, env = "FINWISE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Let FinWise 0.4 clients without a token use the server (no authentication for them).
    #[arg(long, env = "FINWISE_ALLOW_LEGACY_CLIENTS")]
    allow_legacy_clients: bool,
    /// JWT signing secret (default: generated and kept in <data-dir>/jwt.secret).
    #[arg(long, env = "FINWISE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Access token lifetime in seconds.
    #[arg(long, env = "FINWISE_ACCESS_TOKEN_TTL", default_value_t = 15 * 60)]
    access_token_ttl: u64,
    /// Refresh token lifetime in seconds.
    #[arg(long, env = "FINWISE_REFRESH_TOKEN_TTL", default_value_t = 60 * 24 * 3600)]
    refresh_token_ttl: u64,
    /// Refuse new registrations.
    #[arg(long, env = "FINWISE_DISABLE_REGISTRATION")]
    disable_registration: bool,
    /// Largest accepted `updated_at` lead over the server clock, in seconds.
    #[arg(long, env = "FINWISE_MAX_CLOCK_SKEW", default_value_t = 300)]
    max_clock_skew: u64,
    /// Days tombstones are kept for delta sync.
    #[arg(long, env = "FINWISE_TOMBSTONE_DAYS", default_value_t = 90)]
    tombstone_days: u64,
    /// Messages per second per connection (token bucket; burst is twice this).
    #[arg(long, env = "FINWISE_MESSAGES_PER_SECOND", default_value_t = 5000)]
    messages_per_second: u32,
    /// Seconds a tenant may be idle before its database file is closed.
    #[arg(long, env = "FINWISE_IDLE_TENANT_SECS", default_value_t = 60)]
    idle_tenant_secs: u64,
    /// Directory of the built web client served at `/` (default: web/dist when it exists).
    #[arg(long, env = "FINWISE_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// Allowed CORS origins, comma-separated (default: any origin).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
}

impl ServeArgs {
    fn into_config(self) -> Config {
        let d = Config::default();
        Config {
            addr: self.addr,
            data_dir: self.data_dir,
            allow_legacy_clients: self.allow_legacy_clients,
            jwt_secret: self.jwt_secret,
            access_token_ttl: Duration::from_secs(self.access_token_ttl),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl),
            registration_enabled: !self.disable_registration,
            max_clock_skew: Duration::from_secs(self.max_clock_skew),
            tombstone_horizon: Duration::from_secs(self.tombstone_days * 24 * 3600),
            messages_per_second: self.messages_per_second,
            message_burst: self.messages_per_second.saturating_mul(2),
            idle_tenant_close: Duration::from_secs(self.idle_tenant_secs),
            web_dir: self.web_dir.or_else(|| Some(PathBuf::from("web/dist"))),
            cors_origins: self.cors_origins,
            ..d
        }
    }
}

fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FINWISE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Client commands print their own results; only warnings go to the log.
    let level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "error" };
    init_logging(cli.log_json, level);
    match cli.command {
        Command::Client(cmd) => {
            // One line with the cause and the next step; no backtrace for user errors.
            if let Err(e) = client_cmd::run(cli.client, cmd).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve(args) => {
            let config = args.into_config();
            let listener = tokio::net::TcpListener::bind(config.addr).await?;
            // Tests and scripts read the actual port from this line.
            println!("listening on http://{}", listener.local_addr()?);
            finwise_server::serve(listener, config, finwise_server::shutdown_signal()).await
        }
    }
}
