use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idsync_testkit::authentik::AuthentikStub;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const SECRET: &str = "test-webhook-secret";

/// The server `#[sqlx::test]` and these tests use; the test script sets it.
pub(crate) fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `server_url()` pointed at database `name`.
pub(crate) fn url_for(name: &str) -> String {
    let base = server_url();
    let (without_query, query) = match base.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let host_part = match without_query[scheme_end..].find('/') {
        Some(i) => &without_query[..scheme_end + i],
        None => &without_query[..],
    };
    format!("{host_part}/{name}{query}")
}

pub(crate) async fn database_of(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("current_database")
}

/// A connection to the server's maintenance database, for things a test does to the
/// app's database from outside (blocking connections, dropping it).
pub(crate) async fn admin() -> PgPool {
    PgPool::connect(&server_url())
        .await
        .expect("admin connection")
}

/// Makes database `db` unreachable, as an outage would: no new connections, and the
/// open ones ended.
pub(crate) async fn block_database(admin: &PgPool, db: &str) {
    allow_connections(admin, db, false).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .execute(admin)
        .await
        .expect("terminate connections");
}

/// Ends `block_database`.
pub(crate) async fn unblock_database(admin: &PgPool, db: &str) {
    allow_connections(admin, db, true).await;
}

async fn allow_connections(admin: &PgPool, db: &str, allowed: bool) {
    sqlx::query(&format!(
        r#"ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS {allowed}"#
    ))
    .execute(admin)
    .await
    .expect("ALTER DATABASE ... ALLOW_CONNECTIONS");
}

pub(crate) fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idsync"));
    // Only what the test says: no stray IDSYNC_* from the developer's shell.
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("IDSYNC_LOG_FORMAT", "json")
        // The start-up reconcile would register the stub's users behind a test's back;
        // tests of it set this themselves.
        .env("IDSYNC_RECONCILE_START_DELAY", "1h")
        // The development data key, chosen explicitly as scripts/run does: every process
        // of a test (serve, replay, reconcile...) reads what the others encrypted. Tests
        // of the key itself remove or replace it.
        .env("IDSYNC_DATA_KEY", "development")
        // Tests written before erasure count and read the events of deleted users;
        // erasure's own tests (privacy.rs) turn it back on.
        .env("IDSYNC_ERASE_ON_DELETE", "false")
        .kill_on_drop(true);
    cmd
}

/// `idsync ARGS` on the test database, to its end: (success, stdout, stderr).
pub(crate) async fn idsync(
    pool: &PgPool,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let db = database_of(pool).await;
    let out = binary()
        .args(args)
        .env("DATABASE_URL", url_for(&db))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("idsync runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `idsync ARGS` that must succeed: its stdout (stderr in the failure message).
pub(crate) async fn idsync_ok(pool: &PgPool, args: &[&str], env: &[(&str, &str)]) -> String {
    let (ok, out, err) = idsync(pool, args, env).await;
    assert!(ok, "idsync {args:?} failed: {out}{err}");
    out
}

pub(crate) struct App {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

impl App {
    /// `GET /metrics`, the Prometheus text.
    pub(crate) async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// `GET /readyz`: its status and JSON body.
    pub(crate) async fn readyz(&self) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("readyz JSON"))
    }

    /// Polls `/readyz` (20 s at most) until its warnings satisfy `check`; returns the
    /// status and body that did.
    pub(crate) async fn readyz_warns(
        &self,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> (u16, serde_json::Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.readyz().await;
            if check(&body["warnings"].to_string()) {
                return (status, body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: readyz says {body}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Poll `/readyz` until it answers 200.
    pub(crate) async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready in 30 s; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running child has a pid");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("did not exit within {within:?}; logs:\n{}", self.logs()),
        }
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// Start `idsync serve` on a free loopback port and return once it listens.
/// The API token the tests' Authentik stubs accept.
pub(crate) const STUB_TOKEN: &str = "stub-api-token";

/// `idsync serve` on this test's database, syncing from `stub`, and ready. Retries are
/// quick (50-400 ms rather than 1 s doubling to 5 min): under a loaded test machine one
/// slow answer must not push an item past a test's patience. `extra` adds settings (a
/// later one wins over an earlier one of the same name).
pub(crate) async fn serve_with_stub(
    pool: &PgPool,
    stub: &AuthentikStub,
    extra: &[(&str, &str)],
) -> App {
    let db = database_of(pool).await;
    let url = stub.url();
    let mut env = vec![
        ("IDSYNC_AUTHENTIK_URL", url.as_str()),
        ("IDSYNC_AUTHENTIK_TOKEN", STUB_TOKEN),
        ("IDSYNC_SYNC_RETRY_MIN", "50ms"),
        ("IDSYNC_SYNC_RETRY_MAX", "400ms"),
    ];
    env.extend_from_slice(extra);
    let app = spawn_app(&url_for(&db), &env).await;
    app.wait_ready().await;
    app
}

/// `serve_with_stub` that also verifies tokens of `issuer` (its issuer URL and client id
/// as `IDSYNC_OIDC_ISSUER` and `IDSYNC_OIDC_AUDIENCE`).
pub(crate) async fn serve_with_issuer(
    pool: &PgPool,
    stub: &AuthentikStub,
    issuer: &idsync_testkit::oidc::TestIssuer,
    extra: &[(&str, &str)],
) -> App {
    let (iss, aud) = (issuer.issuer(), issuer.client_id());
    let mut env = vec![
        ("IDSYNC_OIDC_ISSUER", iss.as_str()),
        ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
    ];
    env.extend_from_slice(extra);
    serve_with_stub(pool, stub, &env).await
}

pub(crate) async fn spawn_app(database_url: &str, extra_env: &[(&str, &str)]) -> App {
    let mut cmd = binary();
    cmd.arg("serve")
        .env("DATABASE_URL", database_url)
        .env("IDSYNC_LISTEN", "127.0.0.1:0")
        .env("IDSYNC_WEBHOOK_SECRET", SECRET)
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn idsync");
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    {
        let logs = logs.clone();
        // Keep draining stderr for the child's whole life so it never blocks on a pipe.
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(tx) = addr_tx.take_if(|_| line.contains("\"listening\"")) {
                    let addr = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()));
                    let _ = tx.send(addr);
                }
                if let Ok(mut l) = logs.lock() {
                    l.push(line);
                }
            }
        });
    }
    let addr = match tokio::time::timeout(Duration::from_secs(20), addr_rx).await {
        Ok(Ok(Some(addr))) => addr,
        other => panic!(
            "idsync did not report its address ({other:?}); logs:\n{}",
            logs.lock().map(|l| l.join("\n")).unwrap_or_default()
        ),
    };
    App {
        child,
        addr,
        logs,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
    }
}

/// The value of an unlabelled metric in Prometheus text, if present.
pub(crate) fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
}
