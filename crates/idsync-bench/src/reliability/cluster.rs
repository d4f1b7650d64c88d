//! A throwaway PostgreSQL cluster (initdb in a temp dir, its own port) that a scenario
//! may stop and restart without disturbing anything else, and `idsync serve` replicas
//! that may be killed and started again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{BoxError, idsync_binary};

/// Starts and stops the cluster; cheap to clone into a fault task.
#[derive(Clone)]
pub(super) struct PgCtl {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// initdb and postgres refuse to run as root: run them as `postgres` then.
    as_postgres: bool,
}

/// The cluster itself: stopped (immediate) and deleted when dropped.
pub(super) struct PgCluster {
    ctl: PgCtl,
}

impl std::ops::Deref for PgCluster {
    type Target = PgCtl;
    fn deref(&self) -> &PgCtl {
        &self.ctl
    }
}

fn pg_bin() -> Result<PathBuf, BoxError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "initdb not found under /usr/lib/postgresql/*/bin".into())
}

pub(super) fn free_port() -> Result<u16, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl PgCluster {
    /// initdb and start. Trust authentication on loopback; fsync stays on (durability is
    /// what the scenarios test).
    pub(super) async fn create() -> Result<Self, BoxError> {
        let bin = pg_bin()?;
        let dir =
            std::env::temp_dir().join(format!("idsync-rel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            if !status.success() {
                return Err("chown of the cluster directory failed".into());
            }
        }
        let cluster = Self {
            ctl: PgCtl {
                dir,
                bin,
                port: free_port()?,
                as_postgres,
            },
        };
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &cluster.data().display().to_string(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            )
            .await?;
        cluster.start().await?;
        Ok(cluster)
    }

    pub(super) fn ctl(&self) -> PgCtl {
        self.ctl.clone()
    }
}

impl PgCtl {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    async fn run(&self, tool: &str, args: &[&str]) -> Result<(), BoxError> {
        let path = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).stdin(Stdio::null()).output().await?;
        if !out.status.success() {
            return Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    pub(super) async fn start(&self) -> Result<(), BoxError> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.join("log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await
    }

    /// `pg_ctl stop -m fast`: sessions are told 57P01 and disconnected.
    pub(super) async fn stop_fast(&self) -> Result<(), BoxError> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
        .await
    }

    pub(super) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fast shutdown, then start again.
    pub(super) async fn restart_fast(&self) -> Result<(), BoxError> {
        self.stop_fast().await?;
        self.start().await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data().display().to_string();
        let _ = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&pg_ctl)
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            std::process::Command::new(&pg_ctl)
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `idsync serve` process. Its log lines are kept (for the projector leader and
/// for a report when something goes wrong).
pub(super) struct Replica {
    pub child: Child,
    pub addr: SocketAddr,
    pub leader: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    pub(super) async fn start(env: &[(String, String)]) -> Result<Self, BoxError> {
        let mut child = Command::new(idsync_binary()?)
            .arg("serve")
            .env_clear()
            .env("IDSYNC_LISTEN", "127.0.0.1:0")
            .env("IDSYNC_LOG_FORMAT", "json")
            // A restarted replica refuses to start without a key once personal data is
            // encrypted; the scenario's settings may name another.
            .env("IDSYNC_DATA_KEY", "development")
            .env(
                "RUST_LOG",
                "warn,idsync_server::commands::serve=info,idsync_store::projections::projector=info",
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let leader = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let leader = leader.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut tx = Some(tx);
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("\"listening\"")
                        && let Some(addr) = serde_json::from_str::<serde_json::Value>(&line)
                            .ok()
                            .and_then(|v| {
                                v["addr"]
                                    .as_str()
                                    .and_then(|a| a.parse::<SocketAddr>().ok())
                            })
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    if line.contains("projector active") {
                        leader.store(true, Ordering::SeqCst);
                    } else if line.contains("projector stopped")
                        || line.contains("cannot reach the database to project")
                    {
                        leader.store(false, Ordering::SeqCst);
                    }
                    if let Ok(mut log) = log.lock()
                        && log.len() < 20_000
                    {
                        log.push(line);
                    }
                }
            });
        }
        let addr = tokio::time::timeout(Duration::from_secs(30), rx).await??;
        Ok(Self {
            child,
            addr,
            leader,
            log,
        })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(8), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }

    /// Lines of the log that are errors (for the report when a check fails).
    pub(super) fn errors(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|line| line.contains("\"ERROR\""))
                    .take(5)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Replica {
    /// [`Replica::start`], then wait (up to a minute) until it is ready.
    pub(super) async fn start_ready(
        env: &[(String, String)],
        http: &reqwest::Client,
    ) -> Result<Self, BoxError> {
        let replica = Replica::start(env).await?;
        wait_ready(http, &replica, Duration::from_secs(60)).await?;
        Ok(replica)
    }
}

/// Waits until `GET /readyz` answers 200.
pub(super) async fn wait_ready(
    http: &reqwest::Client,
    replica: &Replica,
    within: Duration,
) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = http.get(replica.url("/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("replica {} not ready in {within:?}", replica.addr).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings as owned pairs, for [`Replica::start`].
pub(super) fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The HTTP client a scenario drives its load with.
pub(super) fn client(
    timeout: Duration,
    idle_per_host: Option<usize>,
) -> Result<reqwest::Client, BoxError> {
    // idsync closes a keep-alive connection that stays idle 10 s after a response
    // (docs/contract.md); a pooled connection reused just as that happens fails its
    // request. Like any client of such a server, let idle connections go sooner.
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(5));
    if let Some(idle) = idle_per_host {
        builder = builder.pool_max_idle_per_host(idle);
    }
    Ok(builder.build()?)
}

/// A small deterministic PRNG (xorshift64*): the scenarios are reproducible from a seed
/// and the bench needs no extra dependency.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}
