//! The HTTP server: the axum router on hyper's HTTP/1 connection builder.
//!
//! `axum::serve` would do, except for memory with thousands of open feeds. It sniffs
//! each connection for HTTP/2 first and hands the sniffed bytes back to hyper, which
//! reads them, finds the request incomplete, and grows its read buffer to 16 KiB for the
//! rest: twice what it needs, kept for the connection's whole life. Serving HTTP/1.1
//! only (browsers speak HTTP/2 only over TLS, which a proxy in front terminates) keeps
//! that buffer at hyper's 8 KiB.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` fires, then waits (at most `grace`)
/// for the requests in flight. Open feeds watch the same token and end on their own;
/// WebSockets leave hyper once upgraded and do likewise.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut builder = http1::Builder::new();
    // With a timer, hyper enforces its 30 s limit on reading a request head: a client
    // that trickles headers (slowloris) cannot hold a connection open indefinitely.
    builder.timer(TokioTimer::new());
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        // No Nagle: feed writes are small and must not wait for the previous one's ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        // The peer's address, for the trusted-proxy check on gateway headers.
        let service =
            router
                .clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let connection = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::trace!(error = %err, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

/// Connection-level failures concern one client only. Anything else (out of file
/// descriptors, typically) would fail again at once: pause rather than spin.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
