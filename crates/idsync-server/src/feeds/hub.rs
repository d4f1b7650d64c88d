//! One reader per process for live events. Each new event is read from Postgres once
//! and broadcast to every subscriber, in batches of shared `LiveItem`s; subscribers go to
//! the database only for their backlog or to catch up after falling behind. With thousands
//! of open streams, one read per event instead of one per subscriber is the difference
//! between a feed and a denial of service on Postgres.

use std::sync::Arc;
use std::time::Duration;

use idsync_store::backoff::Backoff;
use idsync_store::projections::users_cache::UsersCache;
use idsync_store::{FeedSignal, Notifier, Position, feed};

use super::{LiveBatch, LiveItem};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<LiveBatch>,
    /// Told of every event the hub reads, before anyone else sees it.
    users_cache: Arc<UsersCache>,
}

impl Hub {
    /// `capacity`: how many events a subscriber may fall behind before it is told it
    /// lagged (it then catches up from the database).
    pub fn new(capacity: usize, users_cache: Arc<UsersCache>) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx, users_cache }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveBatch> {
        self.tx.subscribe()
    }

    /// Read and broadcast new events whenever the notifier signals, until `cancel`.
    pub async fn run(self, pool: PgPool, notifier: Notifier, cancel: CancellationToken) {
        let mut signals = notifier.subscribe();
        let watermarks = notifier.watermarks();
        // Start at the current head: subscribers read anything older themselves.
        let resyncs = watermarks.resyncs();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut head = loop {
            match feed::head(&pool).await {
                Ok(h) => break h,
                Err(err) => {
                    tracing::warn!(error = %err, "live feed cannot read the event log yet");
                    if !backoff.wait(&cancel).await {
                        return;
                    }
                }
            }
        };
        backoff.reset();
        self.users_cache.caught_up(resyncs, head);
        let mut last_broadcast = tokio::time::Instant::now();
        let mut read_again = false;
        loop {
            // Any signal (a position, a resync, a lag, or a quiet period) means: read
            // whatever is after our head.
            if !std::mem::take(&mut read_again) {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = signals.recv() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            // Let a large audience be served before the next broadcast: what commits
            // meanwhile goes out together, as one wake-up and one write per subscriber.
            let pause = fan_out_pause(self.tx.receiver_count());
            if !pause.is_zero() {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep_until(last_broadcast + pause) => {}
                }
            }
            // Read before reading: a complete read from here covers whatever a resync
            // up to now may have hidden.
            let resyncs = watermarks.resyncs();
            loop {
                match feed::read_after(&pool, head, feed::MAX_PAGE).await {
                    Ok(items) if items.is_empty() => {
                        backoff.reset();
                        self.users_cache.caught_up(resyncs, head);
                        break;
                    }
                    Ok(items) => {
                        backoff.reset();
                        let full = items.len() as i64 == feed::MAX_PAGE;
                        head = items.last().map_or(head, |i| i.position);
                        self.users_cache
                            .invalidate(items.iter().map(|i| i.user_pk), head);
                        let batch: LiveBatch = items
                            .into_iter()
                            .map(|i| Arc::new(LiveItem::new(i)))
                            .collect();
                        // No receivers is fine: nobody is listening right now.
                        let _ = self.tx.send(batch);
                        last_broadcast = tokio::time::Instant::now();
                        if !full {
                            self.users_cache.caught_up(resyncs, head);
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "live feed read failed; retrying");
                        if !backoff.wait(&cancel).await {
                            return;
                        }
                    }
                }
            }
            // Signals for what that read already covered would only cause empty reads.
            loop {
                match signals.try_recv() {
                    Ok(FeedSignal::Committed(p)) if Position(p) <= head => {}
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    // Something newer, a resync, or a lag: read again straight away.
                    Ok(_) | Err(TryRecvError::Lagged(_)) => {
                        read_again = true;
                        break;
                    }
                }
            }
        }
    }
}

/// Pause per subscriber between broadcasts: 20 ms at 10,000 subscribers. Tuned with
/// `scripts/bench fanout`; longer pauses (5 or 10 us per subscriber, up to 50-100 ms)
/// did not lower delivery latency there.
const FAN_OUT_COST: Duration = Duration::from_micros(2);
/// The longest a broadcast waits for the previous one's fan-out, whatever the audience.
const MAX_FAN_OUT_PAUSE: Duration = Duration::from_millis(20);

/// The least time between two broadcasts with `receivers` subscribers. Each broadcast
/// costs every subscriber a wake-up and a write, so with thousands of subscribers and
/// a steady trickle of events, broadcasting each event on its own would keep the
/// process busy with system calls and make every event wait in that queue. Pacing
/// turns the trickle into batches whose cost is shared. With few subscribers the pause
/// is negligible and an event goes out as soon as it is read.
fn fan_out_pause(receivers: usize) -> Duration {
    FAN_OUT_COST
        .saturating_mul(u32::try_from(receivers).unwrap_or(u32::MAX))
        .min(MAX_FAN_OUT_PAUSE)
}
