//! Clients that misbehave at the connection level: oversized request heads, heads sent a
//! byte at a time (slowloris), and clients that stop reading. Each must be cut off by
//! the server without holding resources forever or slowing anyone else.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{database_of, spawn_app, url_for};

/// Reads until EOF or error, at most `within`. Returns the bytes and whether the server
/// closed the connection (EOF or reset) in that time.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[sqlx::test(migrations = false)]
async fn hostile_connections_are_cut_off_and_others_are_served(pool: PgPool) {
    let db = database_of(&pool).await;
    pool.close().await;
    let app = spawn_app(&url_for(&db), &[]).await;
    app.wait_ready().await;
    let addr = app.addr;

    // 64 KiB of headers: 431, not a 400 or a dropped connection, and nothing more read.
    let big_head = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut head = String::from("GET /livez HTTP/1.1\r\nHost: x\r\n");
        for i in 0..64 {
            head.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)));
        }
        head.push_str("\r\n");
        // The server may answer and close before it has read everything.
        let _ = tcp.write_all(head.as_bytes()).await;
        let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
        String::from_utf8_lossy(&answer).into_owned()
    });

    // Slowloris: a head a byte a second is cut at the head timeout (10 s).
    let slow = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for byte in head {
            if tcp.write_all(&[*byte]).await.is_err() {
                return started.elapsed();
            }
            // Reading with a 1 s timeout doubles as the pause between bytes.
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => panic!("the server answered a head it never received in full"),
                Err(_) => {}
            }
        }
        panic!("the whole head went through a byte a second: no head timeout");
    });

    // A client that pipelines many requests and never reads: once the socket buffers
    // are full, the server's writes stall and it closes the connection (10 s).
    let stalled = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut pipelined = Vec::new();
        for _ in 0..2000 {
            pipelined.extend_from_slice(request);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&pipelined)).await;
        tokio::time::sleep(Duration::from_secs(14)).await;
        let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
        let responses = String::from_utf8_lossy(&answer)
            .matches("HTTP/1.1 200")
            .count();
        (closed, responses)
    });

    // Meanwhile everyone else is served promptly.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let resp = app.http.get(app.url("/livez")).send().await.expect("livez");
        assert_eq!(resp.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "livez took {slowest:?}"
    );

    let answer = big_head.await.expect("task");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let cut_after = slow.await.expect("task");
    assert!(
        cut_after >= Duration::from_secs(8) && cut_after < Duration::from_secs(14),
        "slowloris cut after {cut_after:?}"
    );
    let (closed, responses) = stalled.await.expect("task");
    assert!(
        closed && responses < 2000,
        "a client that does not read was not cut off ({responses} responses read)"
    );
}
