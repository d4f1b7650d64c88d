use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{
    admin, binary, block_database, database_of, spawn_app, unblock_database, url_for,
};

#[sqlx::test(migrations = false)]
async fn serve_answers_livez_and_readyz_then_stops_on_sigterm(pool: PgPool) {
    let db = database_of(&pool).await;
    pool.close().await;
    let mut app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;

    let live = app.http.get(app.url("/livez")).send().await.expect("livez");
    assert_eq!(live.status(), 200);
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    // The container health check says so too, through the binary itself.
    let (ok, out) = healthcheck(app.addr).await;
    assert!(ok, "{out}");
    assert!(out.contains("ready"), "{out}");

    let started = std::time::Instant::now();
    app.signal("TERM");
    let status = app.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        app.logs()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[sqlx::test(migrations = false)]
async fn readyz_says_503_with_a_reason_while_the_database_is_unreachable(pool: PgPool) {
    let db = database_of(&pool).await;
    pool.close().await;
    let mut app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;

    let admin = admin().await;
    block_database(&admin, &db).await;

    let (status, body) = app.readyz().await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");
    let reasons = body["reasons"].as_array().expect("reasons list");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("database"))),
        "{body}"
    );
    let (ok, out) = healthcheck(app.addr).await;
    assert!(!ok, "healthcheck must fail while not ready");
    assert!(out.contains("503") && out.contains("database"), "{out}");
    // Still alive: liveness does not depend on the database.
    let live = app.http.get(app.url("/livez")).send().await.expect("livez");
    assert_eq!(live.status(), 200);

    // And it recovers by itself once the database is back.
    unblock_database(&admin, &db).await;
    app.wait_ready().await;

    app.signal("TERM");
    assert!(app.wait_exit(Duration::from_secs(5)).await.success());
}

/// `idsync healthcheck` against `addr` (given as IDSYNC_LISTEN, as a container has it):
/// success, and what it printed.
async fn healthcheck(addr: std::net::SocketAddr) -> (bool, String) {
    let out = binary()
        .arg("healthcheck")
        .env("IDSYNC_LISTEN", addr.to_string())
        .output()
        .await
        .expect("run idsync healthcheck");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn serve_refuses_to_start_without_the_webhook_secret() {
    let output = binary()
        .arg("serve")
        .env("IDSYNC_LISTEN", "127.0.0.1:0")
        .output()
        .await
        .expect("run idsync");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].contains("IDSYNC_WEBHOOK_SECRET"), "{stderr}");
}

#[tokio::test]
async fn serve_help_lists_the_configuration() {
    let output = binary()
        .args(["serve", "--help"])
        .output()
        .await
        .expect("run idsync");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for var in [
        "DATABASE_URL",
        "IDSYNC_LISTEN",
        "IDSYNC_WEBHOOK_SECRET",
        "IDSYNC_LOG_FORMAT",
    ] {
        assert!(help.contains(var), "{var} missing:\n{help}");
    }
}

/// A client that trickles its request head (slowloris) is cut off after 10 s rather than
/// holding a connection for as long as it likes.
#[sqlx::test(migrations = false)]
async fn a_request_head_that_never_ends_is_cut_off_after_10_s(pool: PgPool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = database_of(&pool).await;
    let app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: idsync\r\n")
        .await
        .expect("half a head");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // Either the server closes (EOF) or answers 408 and closes; both end the read.
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was still open after 20 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(14),
        "cut off after {waited:?}"
    );
}
