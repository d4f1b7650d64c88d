//! The HTTP server: the axum router on hyper's HTTP/1 connection builder.
//!
//! `axum::serve` would do, except for memory with thousands of open feeds. It sniffs
//! each connection for HTTP/2 first and hands the sniffed bytes back to hyper, which
//! reads them, finds the request incomplete, and grows its read buffer to 16 KiB for the
//! rest: twice what it needs, kept for the connection's whole life. Serving HTTP/1.1
//! only (browsers speak HTTP/2 only over TLS, which a proxy in front terminates) keeps
//! that buffer at hyper's 8 KiB.
//!
//! Hostile and broken clients are bounded here, below the router:
//! - a request head larger than [`MAX_HEAD`] is answered 431 by hyper;
//! - a head not complete within [`HEAD_TIMEOUT`] closes the connection (slowloris);
//! - a connection whose writes make no progress for [`WRITE_STALL`] is closed (a client
//!   that stopped reading: its response, feed or socket would otherwise hold buffers
//!   and a task forever).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Largest request head (request line and headers). Far above any real client's (a
/// browser with cookies and a JWT sends a few KiB); larger ones are answered 431.
pub(crate) const MAX_HEAD: usize = 32 * 1024;
/// A request head must be complete this long after the connection opened or the previous
/// response was sent: hyper has one setting for both, so this is also how long an idle
/// keep-alive connection stays open (docs/contract.md tells clients).
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose writes have made no progress for this long is closed.
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(10);

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
    // With a timer, hyper enforces the limit on reading a request head: a client that
    // trickles headers (slowloris) cannot hold a connection open indefinitely.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        // The read buffer may grow to this and no further: a head that does not fit is
        // answered 431 (hyper's default would let a head grow to ~400 KiB). Bodies are
        // streamed through it in chunks, so they are not limited by it.
        .max_buf_size(MAX_HEAD);
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
            .serve_connection(
                TokioIo::new(StallTimeout::new(tcp, WRITE_STALL)),
                TowerToHyperService::new(service),
            )
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

/// A TCP stream whose writes fail with `TimedOut` once they have been blocked (the peer's
/// receive window full: it does not read) for `limit`. hyper then closes the connection,
/// which ends the response, SSE stream or WebSocket using it. Upgraded connections
/// (WebSockets) keep the wrapper, so the same applies to them.
pub(crate) struct StallTimeout {
    inner: TcpStream,
    limit: Duration,
    /// Armed when a write first returns Pending; disarmed by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallTimeout {
    pub(crate) fn new(inner: TcpStream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `poll` made no progress: fail once the stall has lasted `limit`. Polling the timer
    /// registers this task's waker, so a connection nobody else wakes still times out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client has not read for the write stall limit",
        )))
    }

    fn progress<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for StallTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
