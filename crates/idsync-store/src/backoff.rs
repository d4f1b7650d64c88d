//! Doubling delays for the loops that retry until something works again (the database,
//! a listener's connection, Authentik, the OIDC issuer) and for bounded retries (an
//! aggregate conflict, an inbox item). One helper so they all cap, jitter and stop on
//! shutdown the same way.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays `first`, `2 × first`, ... up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            next: first,
            jitter: false,
        }
    }

    /// Each delay drawn from [d/2, d], so processes that failed together do not retry
    /// in lockstep.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay to wait now; the one after doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.jittered(delay)
    }

    /// The delay before attempt `attempt + 1` when `attempt` attempts failed (1-based),
    /// for retries whose count is stored elsewhere (an inbox item's `attempts`).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let delay = self.first.saturating_mul(2u32.pow(exp)).min(self.max);
        self.jittered(delay)
    }

    /// Sleep the next delay, unless `cancel` fires first: `false` then.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.jitter {
            delay.mul_f64(rand::rng().random_range(0.5..=1.0))
        } else {
            delay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.delay_after(1), ms(100));
        assert_eq!(b.delay_after(3), ms(400));
        assert_eq!(b.delay_after(99), ms(500));
    }

    #[test]
    fn jitter_stays_within_half_to_whole() {
        let ms = Duration::from_millis;
        let b = Backoff::new(ms(100), ms(1000)).with_jitter();
        for _ in 0..200 {
            let d = b.delay_after(3);
            assert!(d >= ms(200) && d <= ms(400), "{d:?}");
        }
    }

    #[tokio::test]
    async fn wait_stops_on_cancel() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!b.wait(&cancel).await);
    }
}
