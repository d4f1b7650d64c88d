//! Live notifications of committed positions: one `LISTEN` connection per process, fanned
//! out to any number of readers through a `tokio::sync::broadcast` channel.
//!
//! A notification is a hint, never the data: readers always fetch events from the
//! database by position. That is what makes the two failure modes harmless. A reader
//! that falls behind the channel gets `Lagged` from its receiver, and a lost `LISTEN`
//! connection (notifications sent while it was down are gone for good) is announced as
//! `FeedSignal::Resync`; in both cases the reader re-reads from its last position.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The channel the first migration's trigger notifies on.
pub const CHANNEL: &str = "idsync_events";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedSignal {
    /// The event at this position committed.
    Committed(i64),
    /// Notifications may have been missed (the listener (re)connected): re-read.
    Resync,
}

#[derive(Debug, Clone)]
pub struct Notifier {
    tx: broadcast::Sender<FeedSignal>,
}

impl Notifier {
    /// `capacity` bounds how far a slow reader may fall behind before it is told it lagged.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedSignal> {
        self.tx.subscribe()
    }

    /// Listen until `cancel` fires, reconnecting with backoff when the connection drops.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.listen_once(&pool, &cancel).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "event listener lost its connection");
                    self.send(FeedSignal::Resync);
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One connection's life. Returns Ok on cancellation, Err when the connection failed.
    async fn listen_once(
        &self,
        pool: &PgPool,
        cancel: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        tracing::debug!("listening for committed events");
        // Whatever committed before LISTEN took effect was never announced to us.
        self.send(FeedSignal::Resync);
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                next = listener.try_recv() => next?,
            };
            match next {
                Some(notification) => match notification.payload().parse::<i64>() {
                    Ok(position) => self.send(FeedSignal::Committed(position)),
                    Err(_) => {
                        tracing::warn!(
                            payload = notification.payload(),
                            "ignoring malformed notification"
                        );
                    }
                },
                // sqlx lost the connection and will reconnect on the next call; anything
                // notified in between is lost.
                None => {
                    tracing::warn!("event listener reconnected; readers will re-read");
                    self.send(FeedSignal::Resync);
                }
            }
        }
    }

    fn send(&self, signal: FeedSignal) {
        // An error only means nobody is subscribed right now, which is fine.
        let _ = self.tx.send(signal);
    }
}
