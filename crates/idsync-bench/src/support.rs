//! Shared plumbing: a throwaway database, the idsync binary on a free port, percentiles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use idsync_testkit::oidc::TestIssuer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `server_url` pointed at database `name`.
pub(crate) fn url_for(server_url: &str, name: &str) -> String {
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
pub(crate) struct ScratchDb {
    pub name: String,
    pub url: String,
    server_url: String,
}

impl ScratchDb {
    pub(crate) async fn create(server_url: &str, prefix: &str) -> Result<Self, BoxError> {
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

    pub(crate) async fn drop_db(self) -> Result<(), BoxError> {
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
pub(crate) fn idsync_binary() -> Result<PathBuf, BoxError> {
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

/// `idsync migrate` on `database_url`.
pub(crate) async fn migrate(database_url: &str) -> Result<(), BoxError> {
    let status = Command::new(idsync_binary()?)
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .stdout(Stdio::null())
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err("idsync migrate failed".into())
    }
}

/// A local OIDC issuer and `idsync serve` trusting it, with `extra` settings.
pub(crate) async fn serve_with_issuer(
    database_url: &str,
    extra: &[(&str, &str)],
) -> Result<(TestIssuer, Server), BoxError> {
    let issuer = TestIssuer::start().await;
    let (iss, aud) = (issuer.issuer(), issuer.client_id());
    let mut env = vec![
        ("IDSYNC_WEBHOOK_SECRET", "bench"),
        ("IDSYNC_OIDC_ISSUER", iss.as_str()),
        ("IDSYNC_OIDC_AUDIENCE", aud.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = Server::start(database_url, &env).await?;
    Ok((issuer, server))
}

pub(crate) struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub(crate) async fn start(database_url: &str, env: &[(&str, &str)]) -> Result<Self, BoxError> {
        let mut child = Command::new(idsync_binary()?)
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("IDSYNC_LISTEN", "127.0.0.1:0")
            .env("IDSYNC_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,idsync_server::commands::serve=info")
            // Chosen explicitly (a restarted replica refuses to start without a key once
            // personal data is encrypted); a scenario may set another.
            .env("IDSYNC_DATA_KEY", "development")
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn wait_ready(&self) -> Result<(), BoxError> {
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("idsync did not become ready in 20 s".into())
    }

    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(6), self.child.wait()).await;
    }
}

/// The `q`-quantile (0..=1) of sorted samples.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Find pgbench on PATH or in Debian's versioned directory.
pub(crate) fn pgbench() -> Result<PathBuf, BoxError> {
    if let Ok(out) = std::process::Command::new("pgbench")
        .arg("--version")
        .output()
        && out.status.success()
    {
        return Ok(PathBuf::from("pgbench"));
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

/// What a closed-loop load measured.
pub(crate) struct Load {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub ok: u64,
    pub failed: u64,
}

/// `senders` keep-alive connections, each sending the request `request(sender, n)` back
/// to back for `duration`; a response with status `expect` counts as ok. The client is a
/// minimal HTTP/1.1 writer/reader rather than a general client: on two cores every
/// cycle the load generator burns is taken from the server under test.
pub(crate) async fn closed_loop<F>(
    addr: SocketAddr,
    senders: usize,
    duration: Duration,
    expect: u16,
    request: F,
) -> Load
where
    F: Fn(usize, u64) -> Vec<u8> + Copy + Send + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    use tokio::io::BufStream;
    use tokio::net::TcpStream;

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(8192);
                let mut failed = 0u64;
                let mut conn: Option<BufStream<TcpStream>> = None;
                let mut scratch = Vec::with_capacity(512);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let bytes = request(sender, n);
                    let t = Instant::now();
                    let stream = match conn.as_mut() {
                        Some(c) => c,
                        None => match TcpStream::connect(addr).await {
                            Ok(tcp) => {
                                let _ = tcp.set_nodelay(true);
                                conn.insert(BufStream::new(tcp))
                            }
                            Err(_) => {
                                failed += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    match exchange(stream, &bytes, &mut scratch).await {
                        Ok(status) if status == expect => latencies.push(t.elapsed()),
                        Ok(_) => failed += 1,
                        Err(_) => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((mut l, f)) = t.await {
            latencies.append(&mut l);
            failed += f;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Load {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        ok: latencies.len() as u64,
        failed,
    }
}

/// Send one request, read one response (status line, headers, Content-Length body).
async fn exchange(
    stream: &mut tokio::io::BufStream<tokio::net::TcpStream>,
    request: &[u8],
    scratch: &mut Vec<u8>,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut status = 0u16;
    let mut content_length = 0usize;
    loop {
        scratch.clear();
        let n = stream.read_until(b'\n', scratch).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = std::str::from_utf8(scratch).unwrap_or("").trim_end();
        if line.is_empty() {
            break;
        }
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    scratch.resize(content_length, 0);
    stream.read_exact(scratch).await?;
    Ok(status)
}

/// Resident set size of a process in KiB (0 if unknown).
pub(crate) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
