//! A group's item. Authentik tells of a membership change or a rename only through an
//! event of the group, so idsync asks the API for the group (its name and its members'
//! pks), works out from the read model which users' groups no longer match, and stores
//! one refresh item per such user. Each is then synced like a webhook for that user:
//! fetched fresh from Authentik, in order with that user's other items, and turned into
//! a `UserUpdated` only if their groups really changed. A deleted group takes its name
//! from its former members the same way.
//!
//! Going through per-user items, rather than writing the new groups straight from the
//! group's answer, keeps one rule for every user change: a user's items run one at a
//! time and each applies what Authentik says now, so a group's change can never undo a
//! newer change of the same user that was in flight.

use std::time::Duration;

use idsync_authentik::ClientError;
use idsync_store::inbox::{Claimed, NewItem, Status, Subject};
use idsync_store::projections::{Projection, projector, users::UsersProjection};
use uuid::Uuid;

use super::{Finished, Outcome, Syncer, finished};
use crate::metrics::AUTHENTIK_REQUESTS;
use crate::readiness::Component;

/// How long a group's item waits for the users read model to catch up with the event
/// log before comparing against it; past this it is retried later.
const CATCH_UP: Duration = Duration::from_secs(5);

/// The format of the refresh items (shown by `idsync inbox list`).
pub(super) const REFRESH_FORMAT: &str = "group_refresh";

impl Syncer {
    pub(super) async fn decide_group(&self, item: &Claimed, uuid: Uuid) -> Outcome {
        let fetched = self.client.get_group(uuid).await;
        let result = match &fetched {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::counter!(AUTHENTIK_REQUESTS, "result" => result).increment(1);
        let old_names = match idsync_store::groups::names_of(&self.pool, uuid).await {
            Ok(names) => names,
            Err(e) => return super::retry(e, None),
        };
        // (members, current name); a deleted group has neither.
        let (members, name) = match fetched {
            Ok(group) => {
                self.readiness.clear_warning(Component::Authentik);
                if let Err(e) =
                    idsync_store::groups::remember(&self.pool, &[(uuid, &group.name)]).await
                {
                    return super::retry(e, None);
                }
                (group.users, Some(group.name))
            }
            Err(ClientError::NotFound) => {
                self.readiness.clear_warning(Component::Authentik);
                if old_names.is_empty() {
                    // Never seen: none of the users idsync knows carries it by a name it
                    // could find. Reconcile compares every user anyway.
                    return finished(Status::Done, Finished::GroupUnknown);
                }
                (Vec::new(), None)
            }
            Err(err) => return self.fetch_failed(err),
        };
        if let Err(outcome) = self.wait_for_read_model().await {
            return outcome;
        }
        let stale = match idsync_store::groups::users_to_refresh(
            &self.pool,
            &members,
            name.as_deref(),
            &old_names,
        )
        .await
        {
            Ok(pks) => pks,
            Err(e) => return super::retry(e, None),
        };
        if name.is_none()
            && let Err(e) = idsync_store::groups::forget(&self.pool, uuid).await
        {
            return super::retry(e, None);
        }
        tracing::info!(
            group = %uuid,
            name = name.as_deref().unwrap_or("(deleted)"),
            seen_as = ?old_names,
            members = members.len(),
            users_to_refresh = stale.len(),
            "group changed"
        );
        let followups = stale
            .iter()
            .map(|pk| NewItem {
                // Derived from this item's id: doing this twice stores each once.
                event_id: Some(format!("{}/user/{pk}", item.id)),
                action: "model_updated",
                subject: Subject::User(*pk),
                format: REFRESH_FORMAT,
                body: format!(r#"{{"group":"{uuid}","inbox_id":"{}"}}"#, item.id),
            })
            .collect::<Vec<_>>();
        Outcome::Finished {
            status: Status::Done,
            outcome: Finished::GroupRefresh {
                users: followups.len(),
            },
            followups,
        }
    }

    /// The comparison reads the users read model; a user event appended but not yet
    /// projected would be missed, so wait (briefly) until the projector has caught up.
    async fn wait_for_read_model(&self) -> Result<(), Outcome> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            match projector::lag(&self.pool, UsersProjection::NAME).await {
                Ok(lag) if lag.events == 0 => return Ok(()),
                Ok(lag) if tokio::time::Instant::now() >= deadline => {
                    return Err(super::retry(
                        format!(
                            "the users read model is {} events behind the log",
                            lag.events
                        ),
                        None,
                    ));
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(super::retry(e, None)),
            }
        }
    }
}
