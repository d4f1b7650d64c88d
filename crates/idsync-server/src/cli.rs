//! Command line and configuration. Every setting is an environment variable (the
//! names and defaults of docs/contract.md) and also a flag; `idsync serve --help` lists them all.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::auth::SubjectField;
use crate::telemetry::LogFormat;

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

    /// Key-encryption key of users' personal data: `v1:<base64 of 32 bytes>` (`idsync
    /// keygen` makes one), or `development` for the public development key
    /// (docs/privacy.md). Unset: the development key on a new database; refused once
    /// personal data is encrypted.
    #[arg(long, env = "IDSYNC_DATA_KEY", global = true, hide_env_values = true)]
    pub data_key: Option<SecretString>,

    /// Former key-encryption keys, comma-separated, still accepted while `idsync
    /// rotate-data-key` rewraps users' keys with IDSYNC_DATA_KEY.
    #[arg(
        long,
        env = "IDSYNC_DATA_KEY_PREVIOUS",
        global = true,
        hide_env_values = true
    )]
    pub data_key_previous: Option<SecretString>,

    /// Erase a user's personal data when Authentik deletes it (UserErased right after
    /// UserDeleted): `true` or `false`.
    #[arg(
        long,
        env = "IDSYNC_ERASE_ON_DELETE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub erase_on_delete: bool,
}

impl GlobalArgs {
    pub fn pool_config(&self) -> idsync_store::db::PoolConfig {
        idsync_store::db::PoolConfig {
            max_connections: self.db_max_connections.max(2),
            ..idsync_store::db::PoolConfig::default()
        }
    }
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
    /// Ask a running idsync whether it is ready (GET /readyz): exit 0 if so, else 1 with
    /// the reason. For container health checks, where there is no curl.
    Healthcheck(HealthcheckArgs),
    /// Print a new key-encryption key for IDSYNC_DATA_KEY.
    Keygen,
    /// Forget a user's personal data (right to erasure): destroy its data key, append
    /// UserErased.
    Erase(EraseArgs),
    /// Encrypt the personal fields of events written before encryption, in batches;
    /// resumable, safe while serve runs.
    EncryptEvents(BatchArgs),
    /// Rewrap every user's data key with IDSYNC_DATA_KEY (the old key in
    /// IDSYNC_DATA_KEY_PREVIOUS); resumable.
    RotateDataKey(BatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// Authentik's pk of the user.
    pub pk: i64,
}

#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Rows per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: i64,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The readiness URL [default: /readyz on IDSYNC_LISTEN's port, over loopback].
    #[arg(long)]
    pub url: Option<String>,
    /// The listen address of the idsync to ask.
    #[arg(long, env = "IDSYNC_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl HealthcheckArgs {
    /// `--url`, or `/readyz` at the listen address (an unspecified address means this
    /// host: ask over loopback).
    pub fn url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}/readyz")
    }
}

/// Settings that are secrets may instead be read from a file named by `<NAME>_FILE`
/// (Docker and Kubernetes secrets), so the secret is in neither the environment shown
/// by `docker inspect` nor the process list. `<NAME>` itself, or the flag, wins.
pub const FILE_VARIABLES: [&str; 5] = [
    "DATABASE_URL",
    "IDSYNC_WEBHOOK_SECRET",
    "IDSYNC_AUTHENTIK_TOKEN",
    "IDSYNC_DATA_KEY",
    "IDSYNC_DATA_KEY_PREVIOUS",
];

/// Parses the command line, with the `<NAME>_FILE` variables of [`FILE_VARIABLES`].
///
/// # Errors
///
/// When a `<NAME>_FILE` cannot be read; clap's own errors exit as usual.
pub fn parse() -> Result<Cli, String> {
    use clap::{CommandFactory, FromArgMatches};
    let command = with_file_values(Cli::command(), &|name| std::env::var_os(name))?;
    Cli::from_arg_matches(&command.get_matches()).map_err(|e| e.to_string())
}

/// Gives every argument read from one of [`FILE_VARIABLES`] the content of its
/// `<NAME>_FILE` as default (hidden from `--help`), when `<NAME>` is unset.
fn with_file_values(
    command: clap::Command,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<clap::Command, String> {
    let mut command = command;
    for name in FILE_VARIABLES {
        if env(name).is_some() {
            continue;
        }
        let file_var = format!("{name}_FILE");
        let Some(path) = env(&file_var) else { continue };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{file_var}: cannot read {}: {e}", path.to_string_lossy()))?;
        // Files usually end with a newline; a secret never does.
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(format!("{file_var}: {} is empty", path.to_string_lossy()));
        }
        // clap wants 'static defaults; this runs once per process.
        let value: &'static str = Box::leak(value.to_owned().into_boxed_str());
        command = set_default_for_env(command, name, value);
    }
    Ok(command)
}

fn set_default_for_env(command: clap::Command, name: &str, value: &'static str) -> clap::Command {
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .filter(|a| a.get_env().is_some_and(|e| e == name))
        .map(|a| a.get_id().clone())
        .collect();
    let mut command = command;
    for id in ids {
        command = command.mut_arg(id, |arg| arg.default_value(value).hide_default_value(true));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for sub in subcommands {
        command = command.mut_subcommand(sub, |s| set_default_for_env(s, name, value));
    }
    command
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
            .map_err(|e| CliError::Setting {
                setting: "IDSYNC_AUTHENTIK_URL",
                source: e.into(),
            }),
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

    /// The first reconcile runs this long after start (or after one interval, if that is
    /// shorter): users Authentik sends no webhook for (the bootstrap admin, blueprints'
    /// users, service accounts) appear soon after start.
    #[arg(long, env = "IDSYNC_RECONCILE_START_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub reconcile_start_delay: Duration,

    /// Live events a slow subscriber may fall behind before it catches up from the database.
    #[arg(long, env = "IDSYNC_FEED_BUFFER", default_value_t = 4096)]
    pub feed_buffer: usize,

    /// Erase deleted users this long after their deletion (serve's periodic job), e.g.
    /// `30d`; unset or 0: only IDSYNC_ERASE_ON_DELETE and explicit erasure.
    #[arg(long, env = "IDSYNC_ERASE_AFTER", value_parser = humantime::parse_duration)]
    pub erase_after: Option<Duration>,

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
            .map_err(|source| crate::CliError::Http {
                what: "HTTP client".to_owned(),
                source,
            })?;
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
        use clap::{CommandFactory, FromArgMatches};
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        // Parse no arguments, so only the environment (files included) and defaults
        // apply. `parse` has read the same files already, so this cannot fail now.
        let command = with_file_values(Only::command(), &|name| std::env::var_os(name))
            .unwrap_or_else(|e| Only::command().error(clap::error::ErrorKind::Io, e).exit());
        let matches = command.get_matches_from(["idsync"]);
        Only::from_arg_matches(&matches)
            .unwrap_or_else(|e| e.exit())
            .serve
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
    fn secrets_may_come_from_files_but_the_variable_wins() {
        use clap::FromArgMatches;
        let dir = std::env::temp_dir().join(format!("idsync-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret\n").expect("write");
        let url = dir.join("url");
        std::fs::write(&url, "postgres://u:p@db/idsync").expect("write");
        let vars = [
            ("IDSYNC_WEBHOOK_SECRET_FILE", secret.clone()),
            ("DATABASE_URL_FILE", url.clone()),
            ("IDSYNC_AUTHENTIK_TOKEN_FILE", secret.clone()),
        ];
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| p.clone().into_os_string())
        };
        let command = with_file_values(Cli::command(), &env)
            .expect("files readable")
            // The test process has a real DATABASE_URL (the test database), which would
            // rightly win over the file: take the variable away from the parser here.
            .mut_arg("database_url", |arg| arg.env(None::<&str>));
        let help = command
            .clone()
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        assert!(
            !help.contains("s3cret"),
            "a secret from a file is not shown"
        );
        let matches = command
            .try_get_matches_from(["idsync", "serve"])
            .expect("parses");
        let cli = Cli::from_arg_matches(&matches).expect("cli");
        assert_eq!(cli.global.database_url, "postgres://u:p@db/idsync");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve")
        };
        use secrecy::ExposeSecret;
        assert_eq!(
            args.webhook_secret.as_ref().map(|s| s.expose_secret()),
            Some("s3cret")
        );
        assert_eq!(
            args.authentik
                .authentik_token
                .as_ref()
                .map(|s| s.expose_secret()),
            Some("s3cret")
        );

        // A flag wins over the file.
        let matches = with_file_values(Cli::command(), &env)
            .expect("files")
            .try_get_matches_from(["idsync", "serve", "--webhook-secret", "flag"])
            .expect("parses");
        let Some(Command::Serve(args)) = Cli::from_arg_matches(&matches).expect("cli").command
        else {
            panic!("serve")
        };
        assert_eq!(
            args.webhook_secret.as_ref().map(|s| s.expose_secret()),
            Some("flag")
        );

        // An unreadable or empty file is an error naming the variable.
        let missing = dir.join("missing");
        let err = with_file_values(Cli::command(), &|name: &str| {
            (name == "IDSYNC_WEBHOOK_SECRET_FILE").then(|| missing.clone().into_os_string())
        })
        .expect_err("missing file");
        assert!(
            err.starts_with("IDSYNC_WEBHOOK_SECRET_FILE: cannot read"),
            "{err}"
        );
        std::fs::write(&secret, "\n").expect("write");
        let err = with_file_values(Cli::command(), &env).expect_err("empty file");
        assert!(err.contains("is empty"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn healthcheck_asks_loopback_at_the_listen_port() {
        let cli = Cli::try_parse_from(["idsync", "healthcheck", "--listen", "0.0.0.0:9090"])
            .expect("parses");
        let Some(Command::Healthcheck(args)) = cli.command else {
            panic!("healthcheck")
        };
        assert_eq!(args.url(), "http://127.0.0.1:9090/readyz");
        let cli = Cli::try_parse_from(["idsync", "healthcheck", "--listen", "[::]:8080"])
            .expect("parses");
        let Some(Command::Healthcheck(args)) = cli.command else {
            panic!("healthcheck")
        };
        assert_eq!(args.url(), "http://[::1]:8080/readyz");
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
