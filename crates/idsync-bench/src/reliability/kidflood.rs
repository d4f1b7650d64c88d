//! Key rotation under a kid flood: tokens naming made-up kids arrive all the time at a
//! running `idsync serve`; the issuer publishes a new key and signs with it. The new
//! key's tokens must be accepted within the unknown-kid refresh interval (5 s), and the
//! flood must cost at most one JWKS fetch per interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idsync_testkit::oidc::{TestIssuer, TokenSpec};

use super::cluster::{PgCluster, Replica, client, settings};
use super::{Row, SECRET};
use crate::support::BoxError;

/// idsync's default `min_refresh_interval`.
const INTERVAL: Duration = Duration::from_secs(5);

pub(super) struct Params {
    pub rotations: usize,
    pub flood_rate: u64,
}

pub(super) async fn run(params: Params) -> Result<Row, BoxError> {
    let cluster = PgCluster::create().await?;
    let database_url = cluster.url("idsync");
    let issuer = TestIssuer::start().await;
    let env = settings(&[
        ("DATABASE_URL", database_url.as_str()),
        ("IDSYNC_WEBHOOK_SECRET", SECRET),
        ("IDSYNC_OIDC_ISSUER", issuer.issuer().as_str()),
        ("IDSYNC_OIDC_AUDIENCE", issuer.client_id().as_str()),
        ("IDSYNC_RECONCILE_INTERVAL", "0"),
    ]);
    let http = client(Duration::from_secs(15), None)?;
    let replica = Replica::start_ready(&env, &http).await?;
    let whoami = replica.url("/api/whoami");
    let spec = TokenSpec::new().sub("1").exp_in(3600);
    let first = http
        .get(&whoami)
        .bearer_auth(issuer.token(&spec))
        .send()
        .await?
        .status();
    if first != 200 {
        return Err(format!("a valid token was answered {first}").into());
    }

    let fetches_before = issuer.jwks_fetches();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let flood_sent = Arc::new(AtomicU64::new(0));
    let flood_wrong = Arc::new(AtomicU64::new(0));
    let flood = {
        let http = http.clone();
        let whoami = whoami.clone();
        let signed = issuer.token_with_unknown_kid(&spec);
        let stop = stop.clone();
        let sent = flood_sent.clone();
        let wrong = flood_wrong.clone();
        let tick = Duration::from_secs_f64(1.0 / params.flood_rate as f64);
        tokio::spawn(async move {
            let (_, rest) = signed.split_once('.').unwrap_or_default();
            let rest = rest.to_owned();
            let mut tasks = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": uuid::Uuid::new_v4().to_string()});
                let token = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
                let http = http.clone();
                let whoami = whoami.clone();
                let wrong = wrong.clone();
                tasks.spawn(async move {
                    let status = http
                        .get(&whoami)
                        .bearer_auth(token)
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    if !matches!(status, Ok(401)) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                });
                sent.fetch_add(1, Ordering::Relaxed);
                while tasks.try_join_next().is_some() {}
                tokio::time::sleep(tick).await;
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    let mut accepted_after = Vec::new();
    let mut refused = 0u64;
    for _ in 0..params.rotations {
        tokio::time::sleep(INTERVAL + Duration::from_millis(1700)).await;
        issuer.rotate();
        let token = issuer.token(&spec);
        let asked = Instant::now();
        // A client that gets 401 tries again a second later, as long as the interval
        // allows; the figure is the time until the first 200.
        loop {
            let status = http.get(&whoami).bearer_auth(&token).send().await?.status();
            if status == 200 {
                accepted_after.push(asked.elapsed());
                break;
            }
            refused += 1;
            if asked.elapsed() > INTERVAL * 3 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flood.await;
    let elapsed = started.elapsed();
    let fetches = issuer.jwks_fetches() - fetches_before;
    let allowed = (elapsed.as_secs_f64() / INTERVAL.as_secs_f64()).ceil() as u64 + 1;
    replica.stop().await;
    drop(cluster);

    let worst = accepted_after
        .iter()
        .max()
        .copied()
        .unwrap_or(Duration::MAX);
    let passed = accepted_after.len() == params.rotations
        && refused == 0
        && worst <= INTERVAL + Duration::from_secs(1)
        && fetches <= allowed
        && flood_wrong.load(Ordering::Relaxed) == 0;
    Ok(Row {
        scenario: "key rotation under a kid flood".into(),
        load: format!(
            "{} requests with made-up kids over {:.0} s ({} /s)",
            flood_sent.load(Ordering::Relaxed),
            elapsed.as_secs_f64(),
            params.flood_rate
        ),
        faults: format!("{} key rotations during the flood", params.rotations),
        lost: 0,
        duplicated: 0,
        other: format!(
            "new key's token accepted after at most {:.2} s ({} refused first; interval {} s); {} JWKS fetches in {:.0} s (allowed ≤ {}); {} made-up kids answered other than 401",
            worst.as_secs_f64(),
            refused,
            INTERVAL.as_secs(),
            fetches,
            elapsed.as_secs_f64(),
            allowed,
            flood_wrong.load(Ordering::Relaxed)
        ),
        passed,
    })
}
