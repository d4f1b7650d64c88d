use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn discovery_url_defaults_to_the_issuers_well_known_url() {
    let config = OidcConfig::new("http://a/application/o/x/", ["c"]);
    assert_eq!(
        config.effective_discovery_url(),
        "http://a/application/o/x/.well-known/openid-configuration"
    );
    let config = OidcConfig::new("http://a/application/o/x", ["c"]);
    assert_eq!(
        config.effective_discovery_url(),
        "http://a/application/o/x/.well-known/openid-configuration"
    );
    let config = OidcConfig {
        discovery_url: Some("http://internal/d".into()),
        ..config
    };
    assert_eq!(config.effective_discovery_url(), "http://internal/d");
}

#[test]
fn leeway_is_clamped_to_a_minute() {
    let config = OidcConfig {
        leeway: Duration::from_secs(3600),
        ..OidcConfig::new("http://a/", ["c"])
    };
    let verifier = Verifier::new(config, reqwest::Client::new());
    assert_eq!(verifier.config().leeway, MAX_LEEWAY);
}

#[test]
fn headers_with_none_hmac_crit_or_garbage_are_refused_before_any_key_lookup() {
    let body = b64(r#"{"sub":"7"}"#);
    for (header, expected) in [
        (r#"{"alg":"none"}"#, "alg none"),
        (r#"{"alg":"NONE"}"#, "alg none"),
        (r#"{"alg":"HS256","kid":"k"}"#, "HMAC"),
        (r#"{"alg":"HS512"}"#, "HMAC"),
        (r#"{"alg":"RS256","crit":["b64"]}"#, "crit"),
        (r#"{"alg":"XY999"}"#, "unsupported alg"),
        (
            r#"{"alg":"RS256","typ":"logout+jwt"}"#,
            "not an access token type",
        ),
        (r#"{"alg":"RS256","typ":"JWS"}"#, "not an access token type"),
        (r#"{"kid":"k"}"#, "JSON object"),
        ("not json", "JSON object"),
    ] {
        let token = format!("{}.{body}.sig", b64(header));
        match parse_header(&token) {
            Err(VerifyError::Invalid(why)) => {
                assert!(why.contains(expected), "{header}: {why}")
            }
            Err(other) => panic!("{header}: {other}"),
            Ok(_) => panic!("{header}: accepted"),
        }
    }
    for token in ["", ".", "a.b", "a.b.c.d.e", "!!!.b.c", "\u{0}.\u{0}.\u{0}"] {
        assert!(
            matches!(parse_header(token), Err(VerifyError::Invalid(_))),
            "{token:?}"
        );
    }
    let header = parse_header(&format!(
        "{}.{body}.sig",
        b64(r#"{"alg":"RS256","kid":"k1","jku":"http://evil"}"#)
    ))
    .expect("RS256 header");
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some("k1"));
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"] {
        let header = format!(r#"{{"alg":"RS256","typ":"{typ}"}}"#);
        parse_header(&format!("{}.{body}.sig", b64(&header)))
            .unwrap_or_else(|e| panic!("typ {typ}: {e}"));
    }
}

#[test]
fn audience_is_a_string_or_an_array() {
    let one: Audience = serde_json::from_str(r#""idsync""#).expect("string");
    assert!(one.contains("idsync") && !one.contains("other"));
    let many: Audience = serde_json::from_str(r#"["a","idsync"]"#).expect("array");
    assert!(many.contains("idsync"));
    assert_eq!(many.iter().count(), 2);
}

/// jsonwebtoken 11 chooses its crypto backend at run time and panics at the first
/// verification when the build enables none or both of `rust_crypto`/`aws_lc_rs`.
/// A real RS256 round trip proves this build has a working backend.
#[test]
fn jsonwebtoken_has_exactly_one_working_crypto_backend() {
    // Exercise the feature-selected default first, before Verifier::new installs one.
    let key = idsync_testkit::oidc::TestKey::generate("unit");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::RS256),
        &serde_json::json!({"sub": "7", "exp": 4_000_000_000u64}),
        key.encoding_key(),
    )
    .expect("RS256 signing works");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(key.jwk()).expect("JWK");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
        .expect("RS256 verification works");
    assert_eq!(data.claims["sub"], "7");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// What RFC 8725 lets an issuer sign access tokens with (asymmetric only).
    const ASYMMETRIC: [&str; 9] = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::default())]

        /// Whatever arrives as a bearer token: an error or a header, never a panic.
        #[test]
        fn any_text_is_answered(token in ".{0,300}") {
            let _ = parse_header(&token);
        }

        /// Three parts whose first is base64url of anything at all.
        #[test]
        fn any_encoded_header_is_answered(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_header(&format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(&bytes)));
        }

        /// Header objects holding anything in the fields that matter.
        #[test]
        fn any_header_object_is_answered(
            fields in prop::collection::btree_map(
                prop_oneof![
                    Just("alg".to_owned()), Just("kid".to_owned()), Just("typ".to_owned()),
                    Just("crit".to_owned()), "[a-z]{1,4}".prop_map(|k| k),
                ],
                any_json(), 0..5),
        ) {
            let header: serde_json::Map<String, serde_json::Value> =
                fields.into_iter().collect();
            let _ = parse_header(&format!("{}.e30.sig", b64(&serde_json::Value::Object(header).to_string())));
        }

        /// Headers an issuer writes are read back: the alg and the kid as written.
        #[test]
        fn issuer_headers_are_read(
            alg in prop::sample::select(ASYMMETRIC.to_vec()),
            kid in proptest::option::of(".{0,40}"),
            typ in proptest::option::of(prop::sample::select(vec!["JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"])),
            extra in prop::collection::btree_map("x[a-z]{0,6}", any_json(), 0..3),
        ) {
            let mut header: serde_json::Map<String, serde_json::Value> = extra.into_iter().collect();
            header.insert("alg".into(), serde_json::json!(alg));
            if let Some(kid) = &kid {
                header.insert("kid".into(), serde_json::json!(kid));
            }
            if let Some(typ) = typ {
                header.insert("typ".into(), serde_json::json!(typ));
            }
            let token = format!("{}.e30.sig", b64(&serde_json::Value::Object(header).to_string()));
            let parsed = parse_header(&token).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.alg, Algorithm::from_str(alg).expect("a known alg"));
            prop_assert_eq!(parsed.kid, kid);
        }

        /// `none` (any case) and HMAC are refused whatever else the header says.
        #[test]
        fn none_and_hmac_are_always_refused(
            alg in prop_oneof![
                "[nN][oO][nN][eE]",
                prop::sample::select(vec!["HS256".to_owned(), "HS384".to_owned(), "HS512".to_owned()]),
            ],
            kid in proptest::option::of(".{0,12}"),
        ) {
            let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
            let token = format!("{}.e30.sig", b64(&header.to_string()));
            prop_assert!(parse_header(&token).is_err());
        }
    }
}
