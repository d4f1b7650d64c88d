use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Where a command came from; stored with every event it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Webhook,
    Reconcile,
    /// An explicit erasure: `idsync erase`, the admin API, or IDSYNC_ERASE_AFTER.
    Erasure,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Reconcile => "reconcile",
            Source::Erasure => "erasure",
        }
    }
}

/// Metadata carried by every event. cqrs-es stores metadata as a string map, so this is
/// the typed view of that map; `to_map` is the only place the keys are spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    pub source: Source,
    /// Authentik's notification event id, when the webhook carried one.
    pub event_id: Option<String>,
    /// When idsync received the webhook (or started the reconcile run).
    pub received_at: DateTime<Utc>,
}

impl EventMetadata {
    pub fn new(source: Source, event_id: Option<String>, received_at: DateTime<Utc>) -> Self {
        Self {
            source,
            event_id,
            received_at,
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(3);
        map.insert("source".to_owned(), self.source.as_str().to_owned());
        if let Some(id) = &self.event_id {
            map.insert("event_id".to_owned(), id.clone());
        }
        map.insert(
            "received_at".to_owned(),
            self.received_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_omits_absent_event_id() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid time");
        let map = EventMetadata::new(Source::Reconcile, None, at).to_map();
        assert_eq!(map.get("source").map(String::as_str), Some("reconcile"));
        assert_eq!(
            map.get("received_at").map(String::as_str),
            Some("2026-01-02T03:04:05.000000Z")
        );
        assert!(!map.contains_key("event_id"));
    }
}
