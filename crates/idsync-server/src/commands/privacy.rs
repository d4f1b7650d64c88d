//! The key-encryption key of personal data (docs/privacy.md): choosing it at start, and
//! the commands `keygen`, `erase`, `encrypt-events` and `rotate-data-key`.

use idsync_domain::{EventMetadata, Source, UserError};
use idsync_store::privacy::{self, DEVELOPMENT, Kek, Keyring};
use idsync_store::{EraseOutcome, EventStore, StoreError, db, erasure};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::CliError;
use crate::cli::{BatchArgs, EraseArgs, GlobalArgs};

/// The keys as configured, before the database is asked: `None` when IDSYNC_DATA_KEY is
/// unset. A malformed key is refused here, at once.
pub fn configured(global: &GlobalArgs) -> Result<Option<Keyring>, CliError> {
    let previous = match &global.data_key_previous {
        Some(list) => list
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let Some(current) = global
        .data_key
        .as_ref()
        .map(|k| k.expose_secret().trim().to_owned())
        .filter(|k| !k.is_empty())
    else {
        return Ok(None);
    };
    Ok(Some(Keyring::new(parse(&current)?, previous)))
}

fn parse(text: &str) -> Result<Kek, CliError> {
    if text == DEVELOPMENT {
        return Ok(Kek::development());
    }
    Ok(Kek::parse(text)?)
}

/// Choose the keyring against what the database holds and install it for this process.
///
/// - IDSYNC_DATA_KEY set: every stored user key must be wrapped by it or by one of
///   IDSYNC_DATA_KEY_PREVIOUS, else a one-line refusal (nothing is written).
/// - Unset: on a database with no encrypted personal data, the development key (logged
///   loudly); once any exists, a one-line refusal.
pub async fn install(global: &GlobalArgs, pool: &PgPool) -> Result<(), CliError> {
    let keyring = check(configured(global)?, &erasure::key_ids(pool).await?)?;
    if keyring.is_development() {
        tracing::warn!(
            key_id = keyring.current().id(),
            "USING THE DEVELOPMENT DATA KEY: personal data is encrypted with a public key and \
             NOT protected; set IDSYNC_DATA_KEY (`idsync keygen`) before real users arrive"
        );
    } else {
        tracing::info!(key_id = keyring.current().id(), "data key loaded");
    }
    privacy::install(Some(keyring));
    Ok(())
}

fn check(configured: Option<Keyring>, stored: &[(String, i64)]) -> Result<Keyring, CliError> {
    let users: i64 = stored.iter().map(|(_, n)| n).sum();
    let ids = || {
        stored
            .iter()
            .map(|(id, n)| format!("{id} ({n} users)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(keyring) = configured else {
        if users > 0 {
            return Err(CliError::Config(format!(
                "IDSYNC_DATA_KEY is not set, but the personal data of {users} users is encrypted \
                 (key {}): set IDSYNC_DATA_KEY to that key (`development` if it is the \
                 development key {})",
                ids(),
                Kek::development().id()
            )));
        }
        return Ok(Keyring::new(Kek::development(), Vec::new()));
    };
    let unknown: Vec<&(String, i64)> = stored.iter().filter(|(id, _)| !keyring.knows(id)).collect();
    if !unknown.is_empty() {
        return Err(CliError::Config(format!(
            "IDSYNC_DATA_KEY (key {}) is not the key users' data keys are wrapped with: {}; \
             set IDSYNC_DATA_KEY to it, or put it in IDSYNC_DATA_KEY_PREVIOUS while rotating",
            keyring.current().id(),
            unknown
                .iter()
                .map(|(id, n)| format!("{id} ({n} users)"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(keyring)
}

/// `idsync keygen`.
pub fn keygen() -> Result<(), CliError> {
    println!("{}", privacy::generate());
    Ok(())
}

async fn ready_pool(global: &GlobalArgs) -> Result<PgPool, CliError> {
    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let problems = db::migration_problems(&pool).await?;
    if !problems.is_empty() {
        return Err(CliError::Config(problems.join("; ")));
    }
    install(global, &pool).await?;
    Ok(pool)
}

/// `idsync erase PK`.
pub async fn erase(global: &GlobalArgs, args: EraseArgs) -> Result<(), CliError> {
    let pool = ready_pool(global).await?;
    let store = EventStore::new(pool.clone());
    let metadata = EventMetadata::new(Source::Erasure, None, chrono::Utc::now());
    let outcome = store.erase(args.pk, &metadata).await;
    pool.close().await;
    match outcome {
        Ok(EraseOutcome::Erased) => println!("user {}: personal data erased", args.pk),
        Ok(EraseOutcome::AlreadyErased) => println!("user {}: already erased", args.pk),
        Err(StoreError::Domain(UserError::Unknown { pk })) => {
            return Err(CliError::Config(format!("no user {pk}")));
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// `idsync encrypt-events`.
pub async fn encrypt_events(global: &GlobalArgs, args: BatchArgs) -> Result<(), CliError> {
    let pool = ready_pool(global).await?;
    let keyring = privacy::keyring().ok_or_else(|| CliError::Config("no keyring".to_owned()))?;
    let started = std::time::Instant::now();
    let mut after = 0;
    let mut total = 0u64;
    loop {
        let (done, next) = erasure::encrypt_batch(&pool, &keyring, after, args.batch_size).await?;
        total += done;
        let Some(next) = next else { break };
        after = next;
        eprintln!("encrypt-events: {total} events encrypted, at position {after}");
    }
    pool.close().await;
    println!(
        "encrypt-events: done, {total} events encrypted in {:.1} s; no personal field is left in plaintext",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `idsync rotate-data-key`.
pub async fn rotate_data_key(global: &GlobalArgs, args: BatchArgs) -> Result<(), CliError> {
    let pool = ready_pool(global).await?;
    let keyring = privacy::keyring().ok_or_else(|| CliError::Config("no keyring".to_owned()))?;
    let mut total = 0u64;
    loop {
        let done = erasure::rotate_batch(&pool, &keyring, args.batch_size).await?;
        if done == 0 {
            break;
        }
        total += done;
        eprintln!("rotate-data-key: {total} user keys rewrapped");
    }
    let left = erasure::key_ids(&pool).await?;
    pool.close().await;
    println!(
        "rotate-data-key: done, {total} user keys rewrapped with key {}; {}",
        keyring.current().id(),
        if left.iter().all(|(id, _)| id == keyring.current().id()) {
            "IDSYNC_DATA_KEY_PREVIOUS is no longer needed".to_owned()
        } else {
            format!("still wrapped otherwise: {left:?}")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_key_only_a_new_database_gets_the_development_key() {
        let ring = check(None, &[]).expect("new database");
        assert!(ring.is_development());
        let stored = vec![(Kek::development().id().to_owned(), 3)];
        let err = check(None, &stored).expect_err("encrypted data exists");
        assert!(err.to_string().contains("IDSYNC_DATA_KEY is not set"));
    }

    #[test]
    fn a_key_that_wrapped_nothing_here_is_refused() {
        let key = Keyring::new(Kek::parse(&privacy::generate()).expect("key"), Vec::new());
        let stored = vec![("0123456789abcdef".to_owned(), 2)];
        let err = check(Some(key), &stored).expect_err("wrong key");
        assert!(err.to_string().contains("0123456789abcdef (2 users)"));
    }
}
