//! Live notifications of committed positions: one `LISTEN` connection per process, fanned
//! out to any number of readers through a `tokio::sync::broadcast` channel.
//!
//! A notification is a hint, never the data: readers always fetch events from the
//! database by position. That is what makes the two failure modes harmless. A reader
//! that falls behind the channel gets `Lagged` from its receiver, and a lost `LISTEN`
//! connection (notifications sent while it was down are gone for good) is announced as
//! `FeedSignal::Resync`; in both cases the reader re-reads from its last position.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// The channel the first migration's trigger notifies on.
pub const CHANNEL: &str = "idsync_events";

/// A payload on [`CHANNEL`] that is not a position: "whatever you derived from the read
/// model may be void; re-read". `idsync replay` sends it when it swaps a rebuilt model in.
pub const RESYNC_PAYLOAD: &str = "resync";

/// What this process has been told, as soon as it is told: the highest committed position
/// notified, and how many times it may have missed notifications (a reconnected
/// listener, a replay). Readers that keep derived state (the users row cache) compare
/// their progress with these before trusting it.
#[derive(Debug, Default)]
pub struct Watermarks {
    notified: AtomicI64,
    resyncs: AtomicU64,
    /// The listener is connected and `LISTEN` is in effect: no notification is being
    /// missed right now.
    listening: AtomicBool,
}

impl Watermarks {
    /// Whether notifications are arriving (the listener is connected and listening).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The highest position notified so far.
    pub fn notified(&self) -> i64 {
        self.notified.load(Ordering::Acquire)
    }

    /// How many resyncs happened so far.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    pub(crate) fn committed(&self, position: i64) {
        self.notified.fetch_max(position, Ordering::AcqRel);
    }

    pub(crate) fn resync(&self) {
        self.resyncs.fetch_add(1, Ordering::AcqRel);
    }
}

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
    watermarks: Arc<Watermarks>,
}

impl Notifier {
    /// `capacity` bounds how far a slow reader may fall behind before it is told it lagged.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            watermarks: Arc::default(),
        }
    }

    /// Updated on receipt of each notification, before it is broadcast.
    pub fn watermarks(&self) -> Arc<Watermarks> {
        self.watermarks.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedSignal> {
        self.tx.subscribe()
    }

    /// Listen until `cancel` fires, reconnecting with backoff when the connection drops.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !cancel.is_cancelled() {
            let result = self.listen_once(&pool, &cancel).await;
            self.watermarks.listening.store(false, Ordering::Release);
            match result {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "event listener lost its connection; reconnecting");
                    self.send(FeedSignal::Resync);
                    if !backoff.wait(&cancel).await {
                        return;
                    }
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
        self.watermarks.listening.store(true, Ordering::Release);
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                next = listener.try_recv() => next?,
            };
            match next {
                Some(notification) if notification.payload() == RESYNC_PAYLOAD => {
                    self.send(FeedSignal::Resync);
                }
                Some(notification) => match notification.payload().parse::<i64>() {
                    Ok(position) => self.send(FeedSignal::Committed(position)),
                    Err(_) => {
                        tracing::warn!(
                            payload = notification.payload(),
                            "ignoring malformed notification"
                        );
                    }
                },
                // sqlx lost the connection. It would reconnect quietly on the next call,
                // but until LISTEN is in effect again notifications are lost without a
                // trace; reconnect here instead, so `listening` says so meanwhile and a
                // resync follows the new LISTEN.
                None => {
                    return Err(sqlx::Error::Protocol(
                        "the LISTEN connection was lost".to_owned(),
                    ));
                }
            }
        }
    }

    fn send(&self, signal: FeedSignal) {
        match signal {
            FeedSignal::Committed(position) => self.watermarks.committed(position),
            FeedSignal::Resync => self.watermarks.resync(),
        }
        // An error only means nobody is subscribed right now, which is fine.
        let _ = self.tx.send(signal);
    }
}
