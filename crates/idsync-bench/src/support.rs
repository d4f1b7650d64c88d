//! Shared plumbing: a throwaway database, the idsync binary on a free port, percentiles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `server_url` pointed at database `name`.
pub fn url_for(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host}/{name}{query}")
}

/// A database that exists for one benchmark run.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
    server_url: String,
}

impl ScratchDb {
    pub async fn create(server_url: &str, prefix: &str) -> Result<Self, BoxError> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(server_url).await?;
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(Self {
            url: url_for(server_url, &name),
            name,
            server_url: server_url.to_owned(),
        })
    }

    pub async fn drop_db(self) -> Result<(), BoxError> {
        let admin = sqlx::PgPool::connect(&self.server_url).await?;
        sqlx::query(&format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.name
        ))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

/// The `idsync` binary built beside this one (`scripts/bench` builds both in release).
pub fn idsync_binary() -> Result<PathBuf, BoxError> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("idsync");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p idsync-server`",
            path.display()
        )
        .into())
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Result<Self, BoxError> {
        let mut child = Command::new(idsync_binary()?)
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("IDSYNC_LISTEN", "127.0.0.1:0")
            .env("IDSYNC_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,idsync_server::commands::serve=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"listening\"") {
                    let addr = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| {
                            v["addr"]
                                .as_str()
                                .and_then(|a| a.parse::<SocketAddr>().ok())
                        });
                    if let (Some(tx), Some(addr)) = (tx.take(), addr) {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(20), rx).await??;
        let server = Self { child, addr };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn wait_ready(&self) -> Result<(), BoxError> {
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("idsync did not become ready in 20 s".into())
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(6), self.child.wait()).await;
    }
}

/// The `q`-quantile (0..=1) of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Find pgbench on PATH or in Debian's versioned directory.
pub fn pgbench() -> Result<PathBuf, BoxError> {
    if let Ok(out) = std::process::Command::new("pgbench")
        .arg("--version")
        .output()
    {
        if out.status.success() {
            return Ok(PathBuf::from("pgbench"));
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin/pgbench"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        "pgbench not found (Debian: apt-get install postgresql-contrib or postgresql)".into()
    })
}
