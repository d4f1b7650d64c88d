//! The verifier against a local Authentik-shaped issuer: accepted tokens, every attack of
//! RFC 8725 / the brief's §6, key rotation, rate-limited refetches and issuer outages.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idsync_oidc::{EMPTY_JWKS_MESSAGE, OidcConfig, Verifier, VerifyError};
use idsync_testkit::oidc::{Algorithm, TestIssuer, TestKey, TokenSpec};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client")
}

/// Verified tokens are not remembered here: these tests watch key handling, which a
/// remembered token would skip. The cache has its own test below.
fn config(issuer: &TestIssuer) -> OidcConfig {
    OidcConfig {
        verified_cache_ttl: Duration::ZERO,
        ..OidcConfig::new(issuer.issuer(), [issuer.client_id()])
    }
}

fn verifier(issuer: &TestIssuer) -> Verifier {
    Verifier::new(config(issuer), http())
}

#[track_caller]
fn assert_invalid(result: Result<idsync_oidc::Claims, VerifyError>, expected: &str) {
    match result {
        Err(VerifyError::Invalid(why)) => {
            assert!(why.contains(expected), "expected {expected:?} in {why:?}");
        }
        Err(other) => panic!("expected Invalid({expected:?}), got {other:?}"),
        Ok(claims) => panic!("expected Invalid({expected:?}), got {claims:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_yields_its_claims_and_keys_are_fetched_once() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let spec = TokenSpec::new()
        .sub("42")
        .groups(["authentik Admins", "staff"])
        .preferred_username("akadmin")
        .email("admin@example.org")
        .name("Admin");
    let claims = verifier
        .verify(&issuer.token(&spec))
        .await
        .expect("valid token");
    assert_eq!(claims.sub, "42");
    assert_eq!(claims.iss, issuer.issuer());
    assert!(claims.aud.contains(&issuer.client_id()));
    assert_eq!(claims.groups, ["authentik Admins", "staff"]);
    assert_eq!(claims.preferred_username.as_deref(), Some("akadmin"));
    assert_eq!(claims.email.as_deref(), Some("admin@example.org"));
    assert_eq!(claims.name.as_deref(), Some("Admin"));
    assert_eq!(claims.azp.as_deref(), Some(issuer.client_id().as_str()));
    assert!(claims.has_scope("openid") && claims.has_scope("profile"));
    assert!(claims.uid.is_some() && claims.iat.is_some() && claims.auth_time.is_some());

    for _ in 0..5 {
        verifier
            .verify(&issuer.token(&TokenSpec::new()))
            .await
            .expect("valid token");
    }
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(issuer.jwks_fetches(), 1, "keys are cached");

    // A clone shares the cache.
    verifier
        .clone()
        .verify(&issuer.token(&TokenSpec::new()))
        .await
        .expect("valid token");
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn aud_may_be_an_array_containing_a_configured_audience() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let token =
        issuer.token(&TokenSpec::new().aud(serde_json::json!(["other", issuer.client_id()])));
    verifier.verify(&token).await.expect("array aud");
}

#[tokio::test]
async fn a_token_without_kid_uses_the_only_key() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    verifier
        .verify(&issuer.token(&TokenSpec::new().without_kid()))
        .await
        .expect("single key, no kid");
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token_alg_none(&TokenSpec::new()))
            .await,
        "alg none",
    );
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token_hs256_with_public_key(&TokenSpec::new()))
            .await,
        "HMAC",
    );
}

#[tokio::test]
async fn an_alg_other_than_the_keys_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    // Correctly signed with the right RSA key, but as PS256 while the JWK says RS256.
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().alg(Algorithm::PS256)))
            .await,
        "alg",
    );
}

#[tokio::test]
async fn rfc_9068_access_tokens_are_accepted_and_other_types_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    for typ in ["at+jwt", "application/at+jwt", "JWT"] {
        let claims = verifier
            .verify(&issuer.token(&TokenSpec::new().typ(typ)))
            .await
            .unwrap_or_else(|e| panic!("typ {typ}: {e}"));
        assert_eq!(claims.sub, "7");
    }
    for typ in ["logout+jwt", "secevent+jwt", "JOSE"] {
        assert_invalid(
            verifier
                .verify(&issuer.token(&TokenSpec::new().typ(typ)))
                .await,
            "not an access token type",
        );
    }
}

#[tokio::test]
async fn an_id_token_is_not_accepted_as_an_access_token() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    // Same header, issuer, audience and signature as an access token; no scope.
    assert_invalid(
        verifier.verify(&issuer.id_token(&TokenSpec::new())).await,
        "ID token",
    );
    verifier
        .verify(&issuer.token(&TokenSpec::new()))
        .await
        .expect("the access token beside it is accepted");
}

#[tokio::test]
async fn expiry_is_enforced_with_a_bounded_leeway() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer); // leeway 30 s
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().exp_in(-120)))
            .await,
        "expired",
    );
    verifier
        .verify(&issuer.token(&TokenSpec::new().exp_in(-10)))
        .await
        .expect("expired 10 s ago, within the 30 s leeway");

    // A configured leeway above 60 s is clamped to 60 s.
    let lenient = Verifier::new(
        OidcConfig {
            leeway: Duration::from_secs(3600),
            ..config(&issuer)
        },
        http(),
    );
    assert_invalid(
        lenient
            .verify(&issuer.token(&TokenSpec::new().exp_in(-120)))
            .await,
        "expired",
    );
}

#[tokio::test]
async fn nbf_in_the_future_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().nbf_in(300)))
            .await,
        "nbf",
    );
    verifier
        .verify(&issuer.token(&TokenSpec::new().nbf_in(-5)))
        .await
        .expect("nbf in the past");
}

#[tokio::test]
async fn a_wrong_issuer_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    // Authentik's issuer has a trailing slash; the string must match exactly.
    let without_slash = issuer.issuer().trim_end_matches('/').to_owned();
    for iss in [
        "http://evil.example/application/o/idsync/".to_owned(),
        without_slash,
    ] {
        assert_invalid(
            verifier
                .verify(&issuer.token(&TokenSpec::new().iss(iss)))
                .await,
            "issuer",
        );
    }
    // An array containing the right issuer is not a string equal to it.
    let spec = TokenSpec::new().claim("iss", serde_json::json!([issuer.issuer(), "x"]));
    assert_invalid(verifier.verify(&issuer.token(&spec)).await, "");
}

#[tokio::test]
async fn a_wrong_audience_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().aud("another-client")))
            .await,
        "audience",
    );
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().aud(serde_json::json!(["a", "b"]))))
            .await,
        "audience",
    );
}

#[tokio::test]
async fn exp_and_sub_are_required() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token_without_exp(&TokenSpec::new()))
            .await,
        "exp",
    );
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().without_sub()))
            .await,
        "sub",
    );
    assert_invalid(
        verifier
            .verify(&issuer.token(&TokenSpec::new().sub("")))
            .await,
        "sub",
    );
}

#[tokio::test]
async fn an_unknown_kid_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token_with_unknown_kid(&TokenSpec::new()))
            .await,
        "no key with kid",
    );
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_headers_are_ignored() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let claims = issuer.claims(&TokenSpec::new());

    // The attacker's own key, offered every way a header can offer one.
    let attacker = TestKey::generate("attacker");
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("attacker".into());
    header.jwk = Some(attacker.jwk().clone());
    header.jku = Some("http://127.0.0.1:9/jwks".into());
    header.x5u = Some("http://127.0.0.1:9/cert.pem".into());
    let forged = jsonwebtoken::encode(&header, &claims, attacker.encoding_key()).expect("sign");
    assert_invalid(verifier.verify(&forged).await, "no key with kid");
    // Without a kid the attacker's key is not "the only key" either: only the JWKS counts.
    header.kid = None;
    let forged = jsonwebtoken::encode(&header, &claims, attacker.encoding_key()).expect("sign");
    assert_invalid(verifier.verify(&forged).await, "signature");

    // The same fields on a token the issuer really signed change nothing.
    let key = issuer.signing_key();
    header.kid = Some(key.kid().to_owned());
    let genuine = jsonwebtoken::encode(&header, &claims, key.encoding_key()).expect("sign");
    verifier
        .verify(&genuine)
        .await
        .expect("extra header fields are ignored");
}

#[tokio::test]
async fn a_foreign_key_behind_a_known_kid_is_rejected() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    assert_invalid(
        verifier
            .verify(&issuer.token_signed_by_foreign_key(&TokenSpec::new()))
            .await,
        "signature",
    );
}

#[tokio::test]
async fn garbage_truncated_and_oversized_tokens_are_rejected_without_panicking() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let valid = issuer.token(&TokenSpec::new());
    let mut cases: Vec<String> = [
        "",
        "garbage",
        "a.b.c",
        "...",
        "Bearer x.y.z",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        "\u{feff}.\u{0}.\u{7f}",
    ]
    .map(String::from)
    .to_vec();
    // Truncated anywhere: inside the header, the payload and the signature.
    for cut in [
        5,
        valid.len() / 3,
        valid.len() / 2,
        valid.len() - 10,
        valid.len() - 1,
    ] {
        cases.push(valid[..cut].to_owned());
    }
    // A flipped character in the signature.
    let mut flipped = valid.clone().into_bytes();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    cases.push(String::from_utf8(flipped).expect("ASCII"));
    for case in &cases {
        assert_invalid(verifier.verify(case).await, "");
    }
    let oversized = format!("{valid}{}", "A".repeat(100 * 1024));
    assert_invalid(verifier.verify(&oversized).await, "longer than");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_with_one_refetch() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let old_token = issuer.token(&TokenSpec::new());
    verifier.verify(&old_token).await.expect("old key");
    assert_eq!(issuer.jwks_fetches(), 1);

    let new_kid = issuer.rotate();
    let new_token = issuer.token(&TokenSpec::new());
    let claims = verifier
        .verify(&new_token)
        .await
        .expect("new key after a refetch");
    assert_eq!(claims.sub, "7");
    assert_eq!(issuer.jwks_fetches(), 2, "exactly one refetch");
    assert_eq!(issuer.discovery_fetches(), 1, "discovery is cached");

    // Both keys are published during the rotation: no further fetches.
    verifier
        .verify(&old_token)
        .await
        .expect("old key still published");
    verifier.verify(&new_token).await.expect("new key");
    assert_eq!(issuer.jwks_fetches(), 2);
    assert!(!new_kid.is_empty());
}

#[tokio::test]
async fn a_retired_key_stops_working_once_the_jwks_drops_it() {
    let issuer = TestIssuer::start().await;
    issuer.set_publish_previous_keys(false);
    let verifier = verifier(&issuer);
    let old_token = issuer.token(&TokenSpec::new());
    verifier.verify(&old_token).await.expect("old key");
    issuer.rotate();
    verifier
        .verify(&issuer.token(&TokenSpec::new()))
        .await
        .expect("new key");
    assert_invalid(verifier.verify(&old_token).await, "no key with kid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_kids_causes_only_a_handful_of_fetches() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let spec = TokenSpec::new();
    // RSA signing costs milliseconds; a few tokens are properly signed, the rest reuse a
    // signature under a new header (the kid lookup comes before any signature check).
    let signed = issuer.token_with_unknown_kid(&spec);
    let (_, payload_and_signature) = signed.split_once('.').expect("JWT");
    let random_kid_token = |i: usize| {
        if i.is_multiple_of(100) {
            return issuer.token_with_unknown_kid(&spec);
        }
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": uuid::Uuid::new_v4().to_string()});
        format!(
            "{}.{payload_and_signature}",
            URL_SAFE_NO_PAD.encode(header.to_string())
        )
    };
    // All at once (single flight: waiters reuse the fetch in progress). The first
    // unknown kid refetches; the others arrive inside the interval and wait for its end,
    // then share one more refetch.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let verifier = verifier.clone();
        let token = random_kid_token(i);
        tasks.spawn(async move { verifier.verify(&token).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_invalid(result.expect("task"), "no key with kid");
    }
    let fetches = issuer.jwks_fetches();
    assert!(fetches <= 3, "{fetches} JWKS fetches for 1,000 random kids");
    // Valid tokens still pass.
    verifier
        .verify(&issuer.token(&spec))
        .await
        .expect("valid token");
}

/// A token made by the issuer's key under a made-up kid, without signing it again (RSA
/// signing costs milliseconds; the kid lookup comes before any signature check).
fn random_kid_token(signed: &str) -> String {
    let (_, payload_and_signature) = signed.split_once('.').expect("JWT");
    let header =
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": uuid::Uuid::new_v4().to_string()});
    format!(
        "{}.{payload_and_signature}",
        URL_SAFE_NO_PAD.encode(header.to_string())
    )
}

/// Today's key rotation under attack: made-up kids arrive all the time, the issuer
/// publishes a new key and signs with it. The new key's tokens must be accepted within
/// one refetch interval (they used to be refused for up to that interval after any
/// made-up kid), and the made-up kids must still cost at most one fetch per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_within_the_interval_during_a_kid_flood() {
    const INTERVAL: Duration = Duration::from_secs(1);
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(
        OidcConfig {
            min_refresh_interval: INTERVAL,
            ..config(&issuer)
        },
        http(),
    );
    let spec = TokenSpec::new();
    verifier
        .verify(&issuer.token(&spec))
        .await
        .expect("the current key");
    let fetches_before = issuer.jwks_fetches();
    let started = std::time::Instant::now();

    // The flood: a made-up kid every 5 ms, each verification in its own task.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let verifier = verifier.clone();
        let signed = issuer.token_with_unknown_kid(&spec);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let verifier = verifier.clone();
                let token = random_kid_token(&signed);
                tasks.spawn(async move { verifier.verify(&token).await });
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while let Some(result) = tasks.join_next().await {
                assert_invalid(result.expect("task"), "no key with kid");
            }
            sent
        })
    };

    let mut worst = Duration::ZERO;
    for round in 0..3 {
        // Let the flood start a fresh interval, then rotate in the middle of it.
        tokio::time::sleep(INTERVAL / 3).await;
        issuer.rotate();
        let token = issuer.token(&spec);
        let asked = std::time::Instant::now();
        verifier
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the new key was refused: {e:?}"));
        worst = worst.max(asked.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.await.expect("flood");
    let elapsed = started.elapsed();
    let fetches = issuer.jwks_fetches() - fetches_before;
    let allowed = elapsed.as_secs_f64() / INTERVAL.as_secs_f64() + 1.0;
    assert!(
        worst <= INTERVAL + Duration::from_millis(500),
        "a new key took {worst:?} to be accepted"
    );
    assert!(
        fetches as f64 <= allowed.ceil(),
        "{fetches} JWKS fetches in {elapsed:?} for {sent} made-up kids (at most one per {INTERVAL:?})"
    );
    assert!(sent > 100, "the flood ran ({sent} made-up kids)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_verifications_share_one_fetch() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let token = issuer.token(&TokenSpec::new());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let verifier = verifier.clone();
        let token = token.clone();
        tasks.spawn(async move { verifier.verify(&token).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("valid token");
    }
    assert_eq!(issuer.jwks_fetches(), 1);
    assert_eq!(issuer.discovery_fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_issuer_with_no_cached_keys_is_unavailable_then_recovers() {
    let issuer = TestIssuer::start().await;
    issuer.set_down(true);
    let verifier = Verifier::new(
        OidcConfig {
            min_refresh_interval: Duration::from_secs(1),
            ..config(&issuer)
        },
        http(),
    );
    let token = issuer.token(&TokenSpec::new());
    assert!(matches!(
        verifier.verify(&token).await,
        Err(VerifyError::Unavailable(_))
    ));
    // Failures are not retried before min_refresh_interval: the down issuer is spared.
    let attempts = issuer.discovery_fetches();
    for _ in 0..20 {
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Unavailable(_))
        ));
    }
    assert_eq!(issuer.discovery_fetches(), attempts);

    issuer.set_down(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier.verify(&token).await.expect("issuer is back");
}

#[tokio::test]
async fn a_stopped_issuer_is_unavailable() {
    let issuer = TestIssuer::start().await;
    let token = issuer.token(&TokenSpec::new());
    issuer.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let verifier = verifier(&issuer);
    assert!(matches!(
        verifier.verify(&token).await,
        Err(VerifyError::Unavailable(_))
    ));
    assert!(matches!(
        verifier.check().await,
        Err(VerifyError::Unavailable(_))
    ));
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_issuer_is_down() {
    let issuer = TestIssuer::start().await;
    // refresh_interval 0: every verification finds the keys stale and tries to refresh.
    let verifier = Verifier::new(
        OidcConfig {
            refresh_interval: Duration::ZERO,
            min_refresh_interval: Duration::ZERO,
            ..config(&issuer)
        },
        http(),
    );
    let token = issuer.token(&TokenSpec::new());
    verifier.verify(&token).await.expect("keys cached");
    issuer.set_down(true);
    let before = issuer.jwks_fetches();
    verifier
        .verify(&token)
        .await
        .expect("cached keys while down");
    assert!(issuer.jwks_fetches() > before, "a refresh was attempted");
    // An unknown kid while down is still just an invalid token.
    assert_invalid(
        verifier
            .verify(&issuer.token_with_unknown_kid(&TokenSpec::new()))
            .await,
        "no key with kid",
    );
}

#[tokio::test]
async fn keys_older_than_the_refresh_interval_are_refetched() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(
        OidcConfig {
            refresh_interval: Duration::from_secs(1),
            ..config(&issuer)
        },
        http(),
    );
    let token = issuer.token(&TokenSpec::new());
    verifier.verify(&token).await.expect("valid");
    verifier.verify(&token).await.expect("valid");
    assert_eq!(issuer.jwks_fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier.verify(&token).await.expect("valid");
    assert_eq!(issuer.jwks_fetches(), 2);
}

#[tokio::test]
async fn authentiks_empty_jwks_is_a_configuration_error() {
    let issuer = TestIssuer::start().await;
    issuer.set_empty_jwks(true);
    let verifier = verifier(&issuer);
    let token = issuer.token(&TokenSpec::new());
    assert_eq!(
        verifier.verify(&token).await.expect_err("no keys"),
        VerifyError::Misconfigured(EMPTY_JWKS_MESSAGE.to_owned())
    );
    assert_eq!(
        verifier.check().await.expect_err("no keys"),
        VerifyError::Misconfigured(EMPTY_JWKS_MESSAGE.to_owned())
    );
}

#[tokio::test]
async fn no_configured_audience_is_a_configuration_error() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(
        OidcConfig::new(issuer.issuer(), Vec::<String>::new()),
        http(),
    );
    match verifier.verify(&issuer.token(&TokenSpec::new())).await {
        Err(VerifyError::Misconfigured(why)) => assert!(why.contains("audience"), "{why}"),
        other => panic!("expected Misconfigured, got {other:?}"),
    }
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "nothing fetched for a broken setup"
    );
}

#[tokio::test]
async fn a_wrong_discovery_url_is_a_configuration_error() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(
        OidcConfig {
            discovery_url: Some(format!(
                "{}nope/.well-known/openid-configuration",
                issuer.issuer()
            )),
            ..config(&issuer)
        },
        http(),
    );
    match verifier.check().await {
        Err(VerifyError::Misconfigured(why)) => assert!(why.contains("404"), "{why}"),
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}

#[tokio::test]
async fn check_fetches_now_and_describes_the_keys() {
    let issuer = TestIssuer::start().await;
    let verifier = verifier(&issuer);
    let summary = verifier.check().await.expect("issuer reachable");
    assert_eq!(
        summary,
        format!(
            "1 key (RS256) from {}; issuer {}",
            issuer.jwks_url(),
            issuer.issuer()
        )
    );
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(issuer.jwks_fetches(), 1);
    // The keys fetched by check serve later verifications.
    verifier
        .verify(&issuer.token(&TokenSpec::new()))
        .await
        .expect("valid");
    assert_eq!(issuer.jwks_fetches(), 1);
    issuer.rotate();
    let summary = verifier.check().await.expect("issuer reachable");
    assert!(
        summary.starts_with("2 keys (RS256, RS256) from "),
        "{summary}"
    );
}

/// The compose stack's case: tokens carry the public issuer (the host the browser used),
/// while idsync reads discovery and keys from an internal host, whose discovery
/// document names that internal host.
#[tokio::test]
async fn a_public_issuer_with_an_internal_discovery_url_works_and_check_says_why() {
    let issuer = TestIssuer::start().await;
    let public = format!(
        "http://localhost:{}/application/o/idsync/",
        issuer.addr().port()
    );
    let verifier = Verifier::new(
        OidcConfig {
            discovery_url: Some(issuer.discovery_url()),
            ..config_with_issuer(&issuer, &public)
        },
        http(),
    );
    let summary = verifier.check().await.expect("an expected split is fine");
    assert!(summary.contains("public/internal split"), "{summary}");
    let token = issuer.token(&TokenSpec {
        iss: Some(public.clone()),
        ..TokenSpec::new()
    });
    let claims = verifier
        .verify(&token)
        .await
        .expect("public issuer accepted");
    assert_eq!(claims.iss, public);
    // A token naming the internal issuer is not the configured one.
    assert_invalid(
        verifier.verify(&issuer.token(&TokenSpec::new())).await,
        "issuer",
    );
}

#[tokio::test]
async fn check_fails_for_an_issuer_no_token_can_carry() {
    let issuer = TestIssuer::start().await;
    // Without the trailing slash Authentik puts in `iss`.
    let no_slash = issuer.issuer().trim_end_matches('/').to_owned();
    let verifier = Verifier::new(config_with_issuer(&issuer, &no_slash), http());
    match verifier.check().await {
        Err(VerifyError::Misconfigured(why)) => {
            assert!(why.contains("slash"), "{why}");
            assert!(why.contains(&issuer.issuer()), "says what to set: {why}");
        }
        other => panic!("expected a misconfiguration, got {other:?}"),
    }
    // localhost where the provider, asked at 127.0.0.1, names 127.0.0.1 (discovery from
    // the configured host would name it too, so this is no internal split).
    let localhost = format!(
        "http://localhost:{}/application/o/idsync/",
        issuer.addr().port()
    );
    let verifier = Verifier::new(config_with_issuer(&issuer, &localhost), http());
    match verifier.check().await {
        Err(VerifyError::Misconfigured(why)) => assert!(why.contains("127.0.0.1"), "{why}"),
        other => panic!("expected a misconfiguration, got {other:?}"),
    }
}

fn config_with_issuer(issuer: &TestIssuer, configured: &str) -> OidcConfig {
    OidcConfig {
        issuer: configured.to_owned(),
        ..config(issuer)
    }
}

#[tokio::test]
async fn a_verified_token_is_remembered_but_never_past_its_expiry() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(
        OidcConfig {
            leeway: Duration::ZERO,
            verified_cache_ttl: Duration::from_secs(60),
            ..config(&issuer)
        },
        http(),
    );
    let token = issuer.token(&TokenSpec::new().exp_in(1));
    verifier.verify(&token).await.expect("fresh token");
    // Remembered: verifying again needs neither the issuer nor a signature check.
    issuer.set_down(true);
    verifier.verify(&token).await.expect("remembered token");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_invalid(verifier.verify(&token).await, "expired");
}
