//! Command line and configuration. Every setting is an environment variable (the
//! CONTRACT's names and defaults) and also a flag; `idsync serve --help` lists them all.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/idsync";

#[derive(Debug, Parser)]
#[command(
    name = "idsync",
    version,
    about = "Event-sourced identity sync backend for Authentik",
    long_about = "idsync receives Authentik's user webhooks, fetches each user through \
                  Authentik's API, appends UserRegistered/UserUpdated/UserDeleted events to a \
                  Postgres event store and serves them to applications."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings every subcommand needs.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Postgres holding the event store and read models; created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    pub database_url: String,

    /// Most connections this process opens to Postgres.
    #[arg(
        long,
        env = "IDSYNC_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// Log format [default: pretty on a terminal, else json]. Filter with RUST_LOG.
    #[arg(long, env = "IDSYNC_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
}

impl GlobalArgs {
    pub fn pool_config(&self) -> idsync_store::db::PoolConfig {
        idsync_store::db::PoolConfig {
            max_connections: self.db_max_connections.max(2),
            ..idsync_store::db::PoolConfig::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and background workers (the default).
    Serve(Box<ServeArgs>),
    /// Create the database if missing, apply migrations, exit.
    Migrate,
    /// Rebuild read models from the event log (built beside the live one, then swapped in).
    Replay(ReplayArgs),
    /// Compare Authentik's users with the read model and append what is missing.
    Reconcile(ReconcileArgs),
    /// Inspect and retry webhook inbox items.
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// Check the configuration and reach every dependency: database, Authentik API, OIDC issuer.
    Check(Box<ServeArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The projection to rebuild.
    #[arg(long, default_value = "users")]
    pub projection: String,
    /// Events per batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: i64,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// Print the differences; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Users per page fetched from Authentik (at most 100).
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    #[command(flatten)]
    pub authentik: AuthentikArgs,
}

#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// List inbox items, newest first.
    List {
        /// Only items with this status.
        #[arg(long, value_parser = ["pending", "processing", "done", "ignored", "failed"])]
        status: Option<String>,
        /// At most this many items.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make a finished item (or every failed one) pending again.
    Retry {
        /// The item's id (`inbox_id` in intake's answer, first column of `inbox list`).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<uuid::Uuid>,
        /// Retry every failed item.
        #[arg(long)]
        failed: bool,
    },
}

impl Default for Command {
    fn default() -> Self {
        // `idsync` alone serves, configured from the environment.
        Command::Serve(Box::new(ServeArgs::from_env()))
    }
}

/// How to reach Authentik's API (serve's sync workers, reconcile, check).
#[derive(Debug, Clone, Args)]
pub struct AuthentikArgs {
    /// Authentik base URL, e.g. http://authentik-server:9000. Without it, webhooks wait in the inbox.
    #[arg(long, env = "IDSYNC_AUTHENTIK_URL")]
    pub authentik_url: Option<String>,

    /// API-intent token of Authentik's service account.
    #[arg(long, env = "IDSYNC_AUTHENTIK_TOKEN", hide_env_values = true)]
    pub authentik_token: Option<SecretString>,

    /// Timeout of one call to Authentik's API.
    #[arg(long, env = "IDSYNC_AUTHENTIK_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub authentik_timeout: Duration,
}

impl AuthentikArgs {
    /// The client, when both URL and token are set; None when neither is. One without
    /// the other is a configuration mistake worth refusing to start for.
    pub fn client(&self) -> Result<Option<idsync_authentik::AuthentikClient>, crate::CliError> {
        use crate::CliError;
        use secrecy::ExposeSecret;
        let url = self
            .authentik_url
            .as_deref()
            .filter(|u| !u.trim().is_empty());
        let token = self
            .authentik_token
            .clone()
            .filter(|t| !t.expose_secret().trim().is_empty());
        match (url, token) {
            (Some(url), Some(token)) => idsync_authentik::AuthentikClient::new(
                url,
                token,
                idsync_authentik::ClientConfig {
                    request_timeout: self.authentik_timeout,
                    ..idsync_authentik::ClientConfig::default()
                },
            )
            .map(Some)
            .map_err(|e| CliError::Config(format!("IDSYNC_AUTHENTIK_URL: {e}"))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(CliError::Config(
                "IDSYNC_AUTHENTIK_URL is set but IDSYNC_AUTHENTIK_TOKEN is not: set the service account's API token".to_owned(),
            )),
            (None, Some(_)) => Err(CliError::Config(
                "IDSYNC_AUTHENTIK_TOKEN is set but IDSYNC_AUTHENTIK_URL is not: set Authentik's base URL".to_owned(),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubjectField {
    Pk,
    Uuid,
    Uid,
    Username,
    Email,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP listen address.
    #[arg(long, env = "IDSYNC_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Bearer secret that Authentik's webhook headers mapping sends. Required.
    #[arg(long, env = "IDSYNC_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,

    #[command(flatten)]
    pub authentik: AuthentikArgs,

    /// Expected `iss` of access tokens, e.g. http://localhost:9000/application/o/idsync/.
    #[arg(long, env = "IDSYNC_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// Where to fetch OIDC discovery [default: issuer + .well-known/openid-configuration].
    #[arg(long, env = "IDSYNC_OIDC_DISCOVERY_URL")]
    pub oidc_discovery_url: Option<String>,

    /// Accepted `aud` values (the client id), comma-separated.
    #[arg(long, env = "IDSYNC_OIDC_AUDIENCE", value_delimiter = ',')]
    pub oidc_audience: Vec<String>,

    /// Which user field the token's `sub` carries.
    #[arg(long, env = "IDSYNC_OIDC_SUBJECT", value_enum, default_value = "pk")]
    pub oidc_subject: SubjectField,

    /// Members of this group (by the token's `groups` claim) may read everyone's data.
    #[arg(long, env = "IDSYNC_ADMIN_GROUP", default_value = "authentik Admins")]
    pub admin_group: String,

    /// CIDRs whose X-Userinfo header is believed, comma-separated [default: none].
    #[arg(long, env = "IDSYNC_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Sync workers in this process (inbox items processed at once).
    #[arg(long, env = "IDSYNC_SYNC_CONCURRENCY", default_value_t = 4)]
    pub sync_concurrency: usize,

    /// How long a claimed inbox item is leased; a crashed process's items are retried after it.
    #[arg(long, env = "IDSYNC_SYNC_LEASE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sync_lease: Duration,

    /// Keep retrying an item for this long after it arrived (covers Authentik outages), then mark it failed.
    #[arg(long, env = "IDSYNC_SYNC_DEADLINE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub sync_deadline: Duration,

    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long, env = "IDSYNC_SYNC_RETRY_MIN", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sync_retry_min: Duration,

    /// Longest retry delay.
    #[arg(long, env = "IDSYNC_SYNC_RETRY_MAX", default_value = "5m", value_parser = humantime::parse_duration)]
    pub sync_retry_max: Duration,

    /// How often serve reconciles with Authentik's user list (one process per database at a time); 0 disables.
    #[arg(long, env = "IDSYNC_RECONCILE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,

    /// Live events a slow subscriber may fall behind before it catches up from the database.
    #[arg(long, env = "IDSYNC_FEED_BUFFER", default_value_t = 4096)]
    pub feed_buffer: usize,

    /// Browser origins allowed by CORS, comma-separated.
    #[arg(
        long,
        env = "IDSYNC_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:3000"
    )]
    pub cors_origins: Vec<String>,
}

impl ServeArgs {
    /// The token verifier, when an issuer is configured.
    pub fn oidc_verifier(&self) -> Result<Option<idsync_oidc::Verifier>, crate::CliError> {
        let Some(issuer) = self.oidc_issuer.as_deref().filter(|i| !i.trim().is_empty()) else {
            return Ok(None);
        };
        let audiences: Vec<String> = self
            .oidc_audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(crate::CliError::Config(
                "IDSYNC_OIDC_ISSUER is set but IDSYNC_OIDC_AUDIENCE is not: set the client id(s) tokens are issued for".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("idsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| crate::CliError::Config(format!("HTTP client: {e}")))?;
        Ok(Some(idsync_oidc::Verifier::new(
            idsync_oidc::OidcConfig {
                issuer: issuer.trim().to_owned(),
                discovery_url: self
                    .oidc_discovery_url
                    .clone()
                    .filter(|u| !u.trim().is_empty()),
                audiences,
                ..idsync_oidc::OidcConfig::default()
            },
            http,
        )))
    }

    fn from_env() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        // Parse no arguments, so only the environment and defaults apply.
        Only::parse_from(["idsync"]).serve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn reconcile_interval_zero_disables() {
        // humantime accepts a bare "0" as well as "0s": both mean "no periodic reconcile".
        for zero in ["0", "0s"] {
            let cli = Cli::try_parse_from(["idsync", "serve", "--reconcile-interval", zero])
                .expect("parses");
            let Some(Command::Serve(args)) = cli.command else {
                panic!("serve");
            };
            assert_eq!(args.reconcile_interval, Duration::ZERO);
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_help_lists_every_contract_variable() {
        let mut cmd = Cli::command();
        // Propagates global arguments (DATABASE_URL, IDSYNC_LOG_FORMAT) into subcommands.
        cmd.build();
        let serve = cmd.find_subcommand_mut("serve").expect("serve subcommand");
        let help = serve.render_long_help().to_string();
        for var in [
            "DATABASE_URL",
            "IDSYNC_LISTEN",
            "IDSYNC_WEBHOOK_SECRET",
            "IDSYNC_AUTHENTIK_URL",
            "IDSYNC_AUTHENTIK_TOKEN",
            "IDSYNC_OIDC_ISSUER",
            "IDSYNC_OIDC_DISCOVERY_URL",
            "IDSYNC_OIDC_AUDIENCE",
            "IDSYNC_OIDC_SUBJECT",
            "IDSYNC_ADMIN_GROUP",
            "IDSYNC_TRUSTED_PROXIES",
            "IDSYNC_CORS_ORIGINS",
            "IDSYNC_LOG_FORMAT",
            "IDSYNC_RECONCILE_INTERVAL",
        ] {
            assert!(help.contains(var), "{var} missing from serve --help");
        }
    }
}
