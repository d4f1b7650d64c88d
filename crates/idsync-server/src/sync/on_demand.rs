//! A caller with a valid token whose user idsync has not synced yet. Authentik sends no
//! webhook for the bootstrap admin, users made by blueprints, the service accounts of
//! client-credentials grants or outposts' accounts: until the next reconcile, the first
//! person to sign in would get 404 from `/api/me`. Instead idsync asks Authentik for
//! that one user at once, stores an inbox item for them (synced like a webhook, so the
//! usual ordering and retries apply) and waits briefly for the read model to have them.
//!
//! Rate-limited twice: a subject Authentik did not know is not asked about again for
//! [`NEGATIVE_TTL`], and at most [`PER_SECOND`] lookups run per second per process, so a
//! flood of valid-but-unknown tokens cannot turn into a flood of API calls.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use idsync_authentik::AuthentikClient;
use idsync_store::inbox::{self, NewItem, Subject};
use idsync_store::projections::users::{self, UserRow};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::SubjectField;

/// How long a subject Authentik did not know is not asked about again.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Lookups per second, per process.
pub(crate) const PER_SECOND: u32 = 5;
/// How long a request waits for the user to be synced.
const WAIT: Duration = Duration::from_secs(5);

/// The inbox format of the items this stores (`idsync inbox list` shows it).
pub(crate) const FORMAT: &str = "on_demand";

pub struct OnDemand {
    client: AuthentikClient,
    subject: SubjectField,
    wake: std::sync::Arc<Notify>,
    unknown: quick_cache::sync::Cache<String, Instant>,
    budget: Mutex<(Instant, u32)>,
}

impl OnDemand {
    pub fn new(
        client: AuthentikClient,
        subject: SubjectField,
        wake: std::sync::Arc<Notify>,
    ) -> Self {
        Self {
            client,
            subject,
            wake,
            unknown: quick_cache::sync::Cache::new(10_000),
            budget: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The user whose token subject is `sub`, synced now if Authentik has them; `None`
    /// when Authentik does not, when the limits say not now, or when the sync did not
    /// finish within a few seconds (it goes on; a later request finds the user).
    pub async fn fetch(&self, pool: &PgPool, sub: &str) -> Option<UserRow> {
        if self
            .unknown
            .get(sub)
            .is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
        {
            return None;
        }
        if !self.take_budget() {
            tracing::debug!("on-demand lookup skipped: rate limit");
            return None;
        }
        let pk = match self.pk_of(sub).await {
            Ok(Some(pk)) => pk,
            Ok(None) => {
                self.unknown.insert(sub.to_owned(), Instant::now());
                return None;
            }
            Err(err) => {
                tracing::warn!(error = %err, "on-demand lookup of a caller's user failed");
                return None;
            }
        };
        let item = NewItem {
            event_id: None,
            action: "model_created",
            subject: Subject::User(pk),
            format: FORMAT,
            body: "{}".to_owned(),
        };
        if let Err(err) = inbox::insert(pool, item).await {
            tracing::warn!(error = %err, pk, "could not store the on-demand sync of a caller's user");
            return None;
        }
        tracing::info!(pk, "a caller's user is not synced yet: syncing it now");
        self.wake.notify_waiters();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            match users::get(pool, pk).await {
                Ok(Some(row)) => return Some(row),
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => return None,
            }
        }
        None
    }

    /// The pk of the user `sub` names, asking Authentik when `sub` is not the pk itself.
    async fn pk_of(&self, sub: &str) -> Result<Option<i64>, idsync_authentik::ClientError> {
        let field = match self.subject {
            SubjectField::Pk => {
                let Some(pk) = sub.parse::<i64>().ok().filter(|pk| *pk > 0) else {
                    return Ok(None);
                };
                // Asked rather than assumed: an unknown pk must not become an item.
                return match self.client.get_user(pk).await {
                    Ok(user) => Ok(Some(user.pk)),
                    Err(idsync_authentik::ClientError::NotFound) => Ok(None),
                    Err(err) => Err(err),
                };
            }
            SubjectField::Username => "username",
            SubjectField::Email => "email",
            SubjectField::Uuid => "uuid",
            // A hash of the install's id and the pk: Authentik's API cannot search by
            // it. The start-up reconcile brings these users.
            SubjectField::Uid => return Ok(None),
        };
        let found = self.client.find_users(field, sub).await?;
        Ok(match found.as_slice() {
            [one] => Some(one.pk),
            // None, or an ambiguous answer (two users with one email): not guessed.
            _ => None,
        })
    }

    fn take_budget(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        if budget.0.elapsed() >= Duration::from_secs(1) {
            *budget = (Instant::now(), 0);
        }
        if budget.1 >= PER_SECOND {
            return false;
        }
        budget.1 += 1;
        true
    }
}
