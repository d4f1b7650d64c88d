//! `serve` built in this process: `build` binds and hands back the address (port 0 asked
//! for, the real one returned, no log to read), `run` serves until its shutdown token is
//! cancelled and then stops cleanly. The process-level behaviour (signals, exit codes) is
//! tested on the real binary in health.rs.

use std::time::Duration;

use clap::Parser;
use idsync_server::cli::{Cli, Command};
use idsync_server::commands::serve;
use sqlx::PgPool;

use crate::helpers::{SECRET, database_of, url_for};

#[sqlx::test(migrations = false)]
async fn build_gives_the_bound_address_and_run_stops_when_told(pool: PgPool) {
    let url = url_for(&database_of(&pool).await);
    let cli = Cli::try_parse_from([
        "idsync",
        "--database-url",
        url.as_str(),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--webhook-secret",
        SECRET,
        "--reconcile-interval",
        "0",
    ])
    .expect("arguments");
    let Some(Command::Serve(args)) = cli.command else {
        panic!("not serve");
    };
    let server = serve::build(&cli.global, *args).await.expect("build");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the bound port, not the one asked for");
    let stop = server.shutdown_token();
    let running = tokio::spawn(server.run());

    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within 10 s")
        .expect("the task did not panic");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(
        http.get(format!("http://{addr}/livez"))
            .send()
            .await
            .is_err(),
        "nothing listens after run returned"
    );
}
