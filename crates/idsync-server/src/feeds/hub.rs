//! One reader per process for live events. Each new event is read from Postgres once
//! and broadcast to every subscriber as a shared `Arc<FeedItem>`; subscribers go to the
//! database only for their backlog or to catch up after falling behind. With thousands
//! of open streams, one read per event instead of one per subscriber is the difference
//! between a feed and a denial of service on Postgres.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use idsync_store::{Notifier, feed};

use super::LiveItem;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<LiveItem>>,
    /// The last position broadcast (0 before the first read).
    head: Arc<AtomicI64>,
}

impl Hub {
    /// `capacity`: how many events a subscriber may fall behind before it is told it
    /// lagged (it then catches up from the database).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            head: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveItem>> {
        self.tx.subscribe()
    }

    /// Read and broadcast new events whenever the notifier signals, until `cancel`.
    pub async fn run(self, pool: PgPool, notifier: Notifier, cancel: CancellationToken) {
        let mut signals = notifier.subscribe();
        // Start at the current head: subscribers read anything older themselves.
        let mut head = loop {
            match feed::head(&pool).await {
                Ok(h) => break h,
                Err(err) => {
                    tracing::warn!(error = %err, "live feed cannot read the event log yet");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        self.head.store(head, Ordering::Release);
        loop {
            // Any signal (a position, a resync, a lag, or a quiet period) means: read
            // whatever is after our head.
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = signals.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            loop {
                match feed::read_after(&pool, head, feed::MAX_PAGE).await {
                    Ok(items) if items.is_empty() => break,
                    Ok(items) => {
                        let full = items.len() as i64 == feed::MAX_PAGE;
                        for item in items {
                            head = item.position;
                            // No receivers is fine: nobody is listening right now.
                            let _ = self.tx.send(Arc::new(LiveItem::new(item)));
                        }
                        self.head.store(head, Ordering::Release);
                        if !full {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "live feed read failed; retrying");
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                }
            }
        }
    }
}
