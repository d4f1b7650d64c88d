//! An SSE reader that follows one replica slot through kills and restarts, resuming with
//! `Last-Event-ID`, and records every position it is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{RwLock, watch};

#[derive(Default, Debug, Clone)]
pub(super) struct ReaderTally {
    pub positions: Vec<i64>,
    pub repeated: u64,
    pub out_of_order: u64,
    pub reconnects: u64,
    pub server_errors: u64,
    pub last: i64,
}

impl ReaderTally {
    /// How many of `head` this reader saw.
    pub(super) fn distinct_seen(&self, head: &[i64]) -> u64 {
        let seen: std::collections::HashSet<i64> = self.positions.iter().copied().collect();
        head.iter().filter(|p| seen.contains(p)).count() as u64
    }
}

pub(super) struct Reader {
    target: watch::Sender<i64>,
    task: tokio::task::JoinHandle<ReaderTally>,
}

impl Reader {
    pub(super) fn spawn(
        addrs: Arc<RwLock<Vec<Option<SocketAddr>>>>,
        slot: usize,
        token: String,
    ) -> Self {
        let (target, mut until) = watch::channel(i64::MAX);
        let task = tokio::spawn(async move {
            let mut tally = ReaderTally::default();
            let mut first = true;
            loop {
                if tally.last >= *until.borrow() {
                    return tally;
                }
                let addr = { addrs.read().await[slot] };
                let Some(addr) = addr else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if !first {
                    tally.reconnects += 1;
                }
                first = false;
                follow(addr, &token, &mut tally, &mut until).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { target, task }
    }

    /// Lets the reader stop once it has seen `last`, waiting at most `within`.
    pub(super) async fn finish(self, last: i64, within: Duration) -> ReaderTally {
        let _ = self.target.send(last);
        let abort = self.task.abort_handle();
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(tally)) => tally,
            _ => {
                abort.abort();
                ReaderTally::default()
            }
        }
    }
}

/// One connection: reads events until the server closes it or the reader has seen
/// everything it was asked to.
async fn follow(
    addr: SocketAddr,
    token: &str,
    tally: &mut ReaderTally,
    until: &mut watch::Receiver<i64>,
) {
    let Ok(Ok(mut tcp)) =
        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
    else {
        return;
    };
    let request = format!(
        "GET /api/events/stream?after=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nLast-Event-ID: {}\r\n\r\n",
        tally.last
    );
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let (mut filled, mut head_done) = (0usize, false);
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        if tally.last >= *until.borrow() {
            return;
        }
        let read = tokio::select! {
            read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf[filled..])) => read,
            changed = until.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        filled += n;
        let mut start = 0;
        if !head_done {
            let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let status: u16 = std::str::from_utf8(&buf[..end])
                .ok()
                .and_then(|h| h.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status >= 500 && status != 503 {
                tally.server_errors += 1;
            }
            if status != 200 {
                return;
            }
            head_done = true;
            start = end + 4;
        }
        while let Some(end) = buf[start..filled].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + end];
            start += end + 1;
            // Chunked framing lines are hex sizes and never start with "id: ".
            if let Some(id) = line.strip_prefix(b"id: ") {
                let Some(position) = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                else {
                    continue;
                };
                if position <= tally.last {
                    if tally.positions.contains(&position) {
                        tally.repeated += 1;
                    } else {
                        tally.out_of_order += 1;
                    }
                } else {
                    tally.last = position;
                }
                tally.positions.push(position);
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}
