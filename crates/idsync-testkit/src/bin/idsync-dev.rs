//! Stand-ins for trying and testing idsync without Authentik, on loopback:
//!
//! - `idsync-dev issuer`: a local OIDC issuer (discovery + JWKS) that prints the settings
//!   to give `idsync serve` and two long-lived tokens, an admin's and a user's.
//! - `idsync-dev authentik-stub`: Authentik's users API with sample users, and a control
//!   API (`PUT`/`DELETE /_stub/users/{pk}`) for harnesses.
//! - `idsync-dev demo`: both of the above plus `idsync serve` wired to them, for the
//!   README's tour (`scripts/demo` builds and runs it). Ctrl-C stops everything.
//!
//! The issuer keeps its key in a file (`--key-file`), so its tokens survive restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use idsync_testkit::authentik::{AuthentikStub, fixtures};
use idsync_testkit::oidc::{TestIssuer, TestKey, TokenSpec};

const ADMIN_GROUP: &str = fixtures::ADMIN_GROUP;
/// The API token the demo's Authentik stand-in accepts.
const STUB_TOKEN: &str = "dev-authentik-token";
/// Tokens the development issuer prints stay valid this long.
const TOKEN_LIFETIME_SECS: i64 = 7 * 24 * 3600;

#[derive(Parser)]
#[command(
    name = "idsync-dev",
    about = "Stand-ins for Authentik, for development and tests (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local OIDC issuer shaped like an Authentik provider; prints settings and tokens.
    Issuer(IssuerArgs),
    /// Authentik's users API with sample users, plus a control API for harnesses.
    AuthentikStub(StubArgs),
    /// The issuer, the Authentik stand-in and `idsync serve`, wired together.
    Demo(DemoArgs),
}

#[derive(Args)]
struct IssuerArgs {
    /// Address to serve discovery and JWKS on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Where the signing key is kept (created when missing), so tokens survive restarts.
    #[arg(long, default_value = "target/idsync-dev/issuer-key.pem")]
    key_file: PathBuf,
}

#[derive(Args)]
struct StubArgs {
    /// Address to serve the API on (port 0: a free one; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The API token it accepts (`Authorization: Bearer <token>`).
    #[arg(long, default_value = STUB_TOKEN)]
    token: String,
    /// Start with the sample users (akadmin, jane, john, an outpost's account).
    #[arg(long)]
    sample_users: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// The idsync binary to run.
    #[arg(long, default_value = "target/release/idsync")]
    idsync: PathBuf,
    /// idsync's listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The OIDC issuer's address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    issuer_listen: SocketAddr,
    /// Where the issuer's signing key is kept (created when missing).
    #[arg(long, default_value = "target/idsync-dev/issuer-key.pem")]
    key_file: PathBuf,
    /// The Authentik stand-in's address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    authentik_listen: SocketAddr,
    /// The webhook secret idsync is started with (the README's examples use change-me).
    #[arg(long, default_value = "change-me")]
    webhook_secret: String,
    /// The frontend's production build (frontend/dist) to serve, with a config.json
    /// for this demo. Needs `--node-issuer`: signing in needs a real OIDC provider.
    #[arg(long, requires = "node_issuer")]
    frontend: Option<PathBuf>,
    /// Where to serve the frontend.
    #[arg(long, default_value = "127.0.0.1:3000")]
    frontend_listen: SocketAddr,
    /// frontend/e2e/issuer.mjs: a real OIDC provider (npm oidc-provider, run with node)
    /// to use instead of the built-in issuer, so people can sign in to the frontend.
    #[arg(long)]
    node_issuer: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Issuer(args) => issuer(args).await,
        Command::AuthentikStub(args) => stub(args).await,
        Command::Demo(args) => demo(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("idsync-dev: {why}");
            ExitCode::FAILURE
        }
    }
}

/// A started issuer and the two tokens it printed.
struct DevIssuer {
    issuer: TestIssuer,
    admin_token: String,
    user_token: String,
}

/// The provider the demo's idsync trusts, whichever it is, and its tokens for curl.
struct DemoIssuer {
    issuer: String,
    audience: String,
    admin_token: String,
    user_token: String,
    /// Keeps the built-in issuer running.
    _builtin: Option<TestIssuer>,
}

impl From<DevIssuer> for DemoIssuer {
    fn from(dev: DevIssuer) -> Self {
        Self {
            issuer: dev.issuer.issuer(),
            audience: dev.issuer.client_id(),
            admin_token: dev.admin_token,
            user_token: dev.user_token,
            _builtin: Some(dev.issuer),
        }
    }
}

/// The audience the node provider's access tokens carry (its resource indicator).
const NODE_AUDIENCE: &str = "urn:idsync:api";

/// Runs frontend/e2e/issuer.mjs (npm oidc-provider) on the issuer's address, with its
/// key kept beside the built-in one's, telling the stand-in about people who sign up;
/// waits for it and asks it for the two curl tokens.
async fn start_node_issuer(
    script: &Path,
    args: &DemoArgs,
    stub: &AuthentikStub,
) -> Result<(tokio::process::Child, DemoIssuer), String> {
    let key_file = args
        .key_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("oidc-provider-key.json");
    if let Some(dir) = key_file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let frontend_origin = format!("http://localhost:{}", args.frontend_listen.port());
    let child = tokio::process::Command::new("node")
        .arg(script)
        .args(["--port", &args.issuer_listen.port().to_string()])
        .args(["--frontend", &frontend_origin])
        .arg("--key-file")
        .arg(&key_file)
        .args(["--stub-url", &stub.url()])
        .arg("--dev-tokens")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run node {}: {e}", script.display()))?;
    let issuer = format!("http://127.0.0.1:{}", args.issuer_listen.port());
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http_get_status(&discovery).await != Ok(200) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the OIDC provider did not answer at {discovery} within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = async |sub: &str| -> Result<String, String> {
        let answer = http_post_json(
            &format!("{issuer}/dev/token"),
            &format!(r#"{{"sub": "{sub}", "ttl": {TOKEN_LIFETIME_SECS}}}"#),
        )
        .await?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token for {sub}: {answer}"))
    };
    let admin_token = token("1").await?;
    let user_token = token("7").await?;
    Ok((
        child,
        DemoIssuer {
            issuer,
            audience: NODE_AUDIENCE.to_owned(),
            admin_token,
            user_token,
            _builtin: None,
        },
    ))
}

/// Serves the frontend's build on `--frontend-listen`, with a `config.json` for this
/// demo and the Content-Security-Policy of the production container (no inline script).
async fn serve_frontend(
    dist: &Path,
    args: &DemoArgs,
    issuer: &DemoIssuer,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use axum::http::{HeaderValue, header};
    use tower_http::services::{ServeDir, ServeFile};
    use tower_http::set_header::SetResponseHeaderLayer;
    if !dist.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html: build the frontend first (scripts/demo does)",
            dist.display()
        ));
    }
    let api = format!("http://127.0.0.1:{}", args.listen.port());
    let config = serde_json::json!({
        "issuer": issuer.issuer,
        "clientId": "idsync-frontend",
        "apiBaseUrl": api,
        "enrollmentFlowSlug": "idsync-enrollment",
        "authentikUrl": issuer.issuer,
    });
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; manifest-src 'self'; connect-src 'self' {api} ws://127.0.0.1:{} {}; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
        args.listen.port(),
        issuer.issuer
    );
    let csp = HeaderValue::from_str(&csp).map_err(|e| format!("CSP: {e}"))?;
    let app = axum::Router::new()
        .route(
            "/config.json",
            axum::routing::get(move || {
                let config = config.clone();
                async move { axum::Json(config) }
            }),
        )
        // Paths the app routes itself get its page (with 200, not 404).
        .fallback_service(ServeDir::new(dist).fallback(ServeFile::new(dist.join("index.html"))))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ));
    let listener = tokio::net::TcpListener::bind(args.frontend_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.frontend_listen))?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

async fn start_issuer(listen: SocketAddr, key_file: &Path) -> Result<DevIssuer, String> {
    let key = load_or_create_key(key_file)?;
    let issuer = TestIssuer::start_on(listen, Some(key))
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let admin_token = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .preferred_username("akadmin")
            .name("authentik Default Admin")
            .email("admin@example.org")
            .groups([ADMIN_GROUP])
            .exp_in(TOKEN_LIFETIME_SECS),
    );
    let user_token = issuer.token(&TokenSpec::new().sub("7").exp_in(TOKEN_LIFETIME_SECS));
    Ok(DevIssuer {
        issuer,
        admin_token,
        user_token,
    })
}

fn load_or_create_key(path: &Path) -> Result<TestKey, String> {
    // The kid is fixed: the key file is the identity of this development issuer.
    const KID: &str = "idsync-dev-key";
    match std::fs::read_to_string(path) {
        Ok(pem) => TestKey::from_private_key_pem(KID, &pem)
            .map_err(|e| format!("{} is not an RSA private key: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = TestKey::generate(KID);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            write_private(path, &key.private_key_pem())?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn issuer(args: IssuerArgs) -> Result<(), String> {
    let dev = start_issuer(args.listen, &args.key_file).await?;
    println!("Local OIDC issuer for development (tokens valid 7 days, kept across restarts");
    println!(
        "while {} exists). Keep it running, and start idsync with:\n",
        args.key_file.display()
    );
    println!("  IDSYNC_OIDC_ISSUER={} \\", dev.issuer.issuer());
    println!("  IDSYNC_OIDC_AUDIENCE={} \\", dev.issuer.client_id());
    println!("  IDSYNC_WEBHOOK_SECRET=change-me idsync serve\n");
    println!(
        "An admin (sub 1, group \"{ADMIN_GROUP}\"):\n\n  export ADMIN_TOKEN={}\n",
        dev.admin_token
    );
    println!(
        "A user (sub 7):\n\n  export USER_TOKEN={}\n",
        dev.user_token
    );
    println!("Ctrl-C stops the issuer.");
    wait_for_stop().await;
    Ok(())
}

async fn start_stub(
    listen: SocketAddr,
    token: &str,
    sample_users: bool,
) -> Result<AuthentikStub, String> {
    let stub = AuthentikStub::start_on(listen, token)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    if sample_users {
        stub.upsert_many(sample_directory());
    }
    Ok(stub)
}

/// A small directory: the bootstrap admin, two people and an outpost's service account
/// (Authentik registers those as users too).
fn sample_directory() -> Vec<serde_json::Value> {
    vec![
        fixtures::user(1)
            .username("akadmin")
            .name("authentik Default Admin")
            .email("admin@example.org")
            .groups(&[ADMIN_GROUP])
            .json(),
        fixtures::user(7)
            .username("jane")
            .name("Jane Doe")
            .email("jane@example.org")
            .groups(&["staff"])
            .json(),
        fixtures::user(8)
            .username("john")
            .name("John Roe")
            .email("john@example.org")
            .json(),
        fixtures::user(9)
            .username("ak-outpost-8f1c2d")
            .name("Outpost authentik Embedded Outpost Service-account")
            .email("")
            .user_type("internal_service_account")
            .path("goauthentik.io/outposts")
            .json(),
    ]
}

async fn stub(args: StubArgs) -> Result<(), String> {
    let stub = start_stub(args.listen, &args.token, args.sample_users).await?;
    // Harnesses read these two lines to find the stub.
    println!("AUTHENTIK_URL={}", stub.url());
    println!("AUTHENTIK_TOKEN={}", args.token);
    wait_for_stop().await;
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    if !args.idsync.is_file() {
        return Err(format!(
            "{} not found: build it first (scripts/demo does)",
            args.idsync.display()
        ));
    }
    let stub = start_stub(args.authentik_listen, STUB_TOKEN, true).await?;
    // The provider for the frontend (a real one, in node), or the built-in issuer.
    let (dev, _node) = match &args.node_issuer {
        Some(script) => {
            let (node, dev) = start_node_issuer(script, &args, &stub).await?;
            (dev, Some(node))
        }
        None => (
            start_issuer(args.issuer_listen, &args.key_file)
                .await?
                .into(),
            None,
        ),
    };
    let _frontend = match &args.frontend {
        Some(dist) => Some(serve_frontend(dist, &args, &dev).await?),
        None => None,
    };
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/idsync".to_owned());

    let mut child = tokio::process::Command::new(&args.idsync)
        .arg("serve")
        .env("DATABASE_URL", &database_url)
        .env("IDSYNC_LISTEN", args.listen.to_string())
        .env("IDSYNC_WEBHOOK_SECRET", &args.webhook_secret)
        .env("IDSYNC_DATA_KEY", demo_data_key())
        .env("IDSYNC_AUTHENTIK_URL", stub.url())
        .env("IDSYNC_AUTHENTIK_TOKEN", STUB_TOKEN)
        .env("IDSYNC_OIDC_ISSUER", &dev.issuer)
        .env("IDSYNC_OIDC_AUDIENCE", &dev.audience)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.idsync.display()))?;

    let base = format!("http://{}", args.listen);
    tokio::select! {
        ready = wait_ready(&base) => ready?,
        status = child.wait() => {
            return Err(format!("idsync exited before it was ready ({})", describe(status)));
        }
    }
    let env_file = args
        .key_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("demo.env");
    write_env_file(
        &env_file,
        &args.idsync,
        &stub,
        &args.webhook_secret,
        &base,
        &dev,
        &database_url,
    )?;
    print_tour(&args, &base, &stub, &dev, &database_url, &env_file);

    tokio::select! {
        status = child.wait() => Err(format!("idsync exited ({})", describe(status))),
        () = wait_for_stop() => {
            // From a terminal, Ctrl-C reached idsync too; otherwise pass the signal on.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            match tokio::time::timeout(Duration::from_secs(6), child.wait()).await {
                Ok(_) => Ok(()),
                Err(_) => {
                    let _ = child.kill().await;
                    Err("idsync did not stop within 6 s; killed".to_owned())
                }
            }
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Polls `/readyz` until it answers 200, for at most a minute (migrations of a new
/// database included).
async fn wait_ready(base: &str) -> Result<(), String> {
    let url = format!("{base}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        match http_get_status(&url).await {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("HTTP {status}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("idsync was not ready within 60 s: {url}: {last}"))
}

/// A bare HTTP/1.1 POST of a JSON body, returning the JSON answer (this crate has no
/// HTTP client).
async fn http_post_json(url: &str, body: &str) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{url}: {}", head.lines().next().unwrap_or(head)));
    }
    serde_json::from_str(body).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// A bare HTTP/1.1 GET returning the status code (this crate has no HTTP client).
async fn http_get_status(url: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_owned())
}

/// The settings a second terminal needs, for `source`: the tokens, the database, and
/// the idsync CLI on the PATH.
/// The key-encryption key of personal data the demo's serve uses, and the CLI commands
/// pasted from the tour must use too (they refuse to guess once data is encrypted):
/// `IDSYNC_DATA_KEY` as scripts/demo sets it, else the public development key.
fn demo_data_key() -> String {
    std::env::var("IDSYNC_DATA_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .unwrap_or_else(|| "development".to_owned())
}

fn write_env_file(
    path: &Path,
    idsync: &Path,
    stub: &AuthentikStub,
    secret: &str,
    base: &str,
    dev: &DemoIssuer,
    database_url: &str,
) -> Result<(), String> {
    let bin_dir = idsync
        .canonicalize()
        .ok()
        .and_then(|bin| bin.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let text = format!(
        "# Written by `idsync-dev demo`: `source` it in another terminal.\n\
         export IDSYNC={base}\n\
         export DATABASE_URL={database_url}\n\
         export ADMIN_TOKEN={admin}\n\
         export USER_TOKEN={user}\n\
         export IDSYNC_WEBHOOK_SECRET={secret}\n\
         export IDSYNC_AUTHENTIK_URL={authentik}\n\
         export IDSYNC_AUTHENTIK_TOKEN={authentik_token}\n\
         export IDSYNC_OIDC_ISSUER={issuer}\n\
         export IDSYNC_OIDC_AUDIENCE={audience}\n\
         export IDSYNC_DATA_KEY='{data_key}'\n\
         export PATH=\"{bin}:$PATH\"\n",
        data_key = demo_data_key(),
        admin = dev.admin_token,
        user = dev.user_token,
        secret = secret,
        authentik = stub.url(),
        authentik_token = STUB_TOKEN,
        issuer = dev.issuer,
        audience = dev.audience,
        bin = bin_dir.display(),
    );
    let _ = std::fs::remove_file(path);
    write_private(path, &text)
}

fn print_tour(
    args: &DemoArgs,
    base: &str,
    stub: &AuthentikStub,
    dev: &DemoIssuer,
    database_url: &str,
    env_file: &Path,
) {
    let secret = &args.webhook_secret;
    println!(
        r#"
idsync demo: ready at {base}
{frontend}  idsync          {base}  (API docs: {base}/docs)
  Authentik API   {stub_url}  (a stand-in with users 1 akadmin, 7 jane, 8 john, 9 an outpost account)
  OIDC issuer     {issuer}  (a local one{provider})
  database        {database_url}
  webhook secret  {secret}

In another terminal, from this folder, load the tokens and put the idsync CLI on the PATH
(what the README's "Using it" section expects):

  source {env_file}

It sets IDSYNC={base}, DATABASE_URL, ADMIN_TOKEN (akadmin, an admin), USER_TOKEN (jane, pk 7),
the IDSYNC_* settings the CLI needs (reconcile, check) and PATH. Then, for example:

  curl -s {base}/authentik/webhook -H 'Content-Type: application/json' \
       -H 'Authorization: Bearer {secret}' -d '{{"event_type": "model_created", "pk": 7}}'
  curl -s {base}/api/me -H "Authorization: Bearer $USER_TOKEN"
  curl -N '{base}/api/events/stream?after=0' -H "Authorization: Bearer $ADMIN_TOKEN"
  idsync inbox list

Add or change a user in the stand-in, then send its webhook:

  curl -s -X PUT {stub_url}/_stub/users/10 -d '{{"username": "ada", "name": "Ada Lovelace"}}'

Ctrl-C stops everything."#,
        stub_url = stub.url(),
        issuer = dev.issuer,
        env_file = env_file.display(),
        frontend = match &args.frontend {
            Some(_) => format!(
                "  frontend        http://localhost:{}  (sign in as akadmin/akadmin, jane/jane or john/john)\n",
                args.frontend_listen.port()
            ),
            None => String::new(),
        },
        provider = if args.node_issuer.is_some() {
            ": npm oidc-provider"
        } else {
            ""
        },
    );
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
