//! Webhooks refused for a wrong or missing secret. Authentik retries a refused
//! notification five times over about 7.5 minutes and then drops it for good, so an
//! operator must hear of a misconfigured headers mapping quickly: each refusal is
//! counted, logged (at most one line per [`LOG_EVERY`], with the peer and how many were
//! refused since the last line; never the header's value), and `/readyz` carries a
//! warning while any were refused in the last [`WINDOW`].

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a refusal keeps `/readyz`'s warning up: longer than Authentik's retries.
pub(super) const WINDOW: Duration = Duration::from_secs(600);
/// At most one log line per this long.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);
/// Refusals remembered (only their times); past this the oldest are forgotten, and the
/// count in the warning says "at least".
const MAX_REMEMBERED: usize = 10_000;

#[derive(Clone, Default)]
pub struct Rejections {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    times: VecDeque<Instant>,
    last_peer: Option<IpAddr>,
    last_logged: Option<Instant>,
    since_log: u64,
}

impl Rejections {
    /// A webhook from `peer` was refused (401).
    pub fn record(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.forget_older_than(now);
        if state.times.len() == MAX_REMEMBERED {
            state.times.pop_front();
        }
        state.times.push_back(now);
        state.last_peer = Some(peer);
        state.since_log += 1;
        let due = state
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            tracing::warn!(
                %peer,
                refused = state.since_log,
                "webhook refused: missing or wrong secret. Authentik's headers mapping must send \
                 Authorization: Bearer <IDSYNC_WEBHOOK_SECRET>; Authentik drops a refused \
                 notification after about 7.5 minutes of retries"
            );
            state.last_logged = Some(now);
            state.since_log = 0;
        }
    }

    /// `/readyz`'s warning while refusals happened within [`WINDOW`].
    pub fn warning(&self) -> Option<String> {
        let now = Instant::now();
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.forget_older_than(now);
        let last = *state.times.back()?;
        Some(format!(
            "{} webhook(s) refused (401, missing or wrong secret) in the last {} minutes, the \
             last {} s ago from {}: check that Authentik's headers mapping sends IDSYNC_WEBHOOK_SECRET \
             (Authentik gives up on a refused notification after about 7.5 minutes; \
             `idsync reconcile` repairs what was lost)",
            state.times.len(),
            WINDOW.as_secs() / 60,
            now.duration_since(last).as_secs(),
            state
                .last_peer
                .map_or_else(|| "?".to_owned(), |p| p.to_string()),
        ))
    }
}

impl State {
    fn forget_older_than(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_raises_a_warning_that_counts_and_names_the_peer() {
        let rejections = Rejections::default();
        assert_eq!(rejections.warning(), None);
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..3 {
            rejections.record(peer);
        }
        let warning = rejections.warning().expect("a warning");
        assert!(warning.starts_with("3 webhook(s) refused"), "{warning}");
        assert!(warning.contains("192.0.2.7"), "{warning}");
    }
}
