//! Identity passed by an API gateway in front of idsync (APISIX's openid-connect plugin):
//! `X-Access-Token` (a token, verified like any bearer) or `X-Userinfo` (base64 JSON, a
//! claim only). APISIX up to 3.16 forwards a client's own `X-Userinfo` untouched, so these
//! headers are believed only when the TCP peer is a configured trusted proxy (see
//! [`super::identify`]).

use std::net::IpAddr;

use base64::Engine;
use idsync_oidc::{Audience, Claims};
use ipnet::IpNet;
use serde_json::Value;

/// `IDSYNC_TRUSTED_PROXIES`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs; a bare address means just that address.
    pub fn parse(items: &[String]) -> Result<Self, String> {
        items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("IDSYNC_TRUSTED_PROXIES: {s:?} is not an address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Standard base64 (APISIX pads it; unpadded is accepted too) of a JSON object.
pub(crate) fn decode_userinfo(raw: &str) -> Option<serde_json::Map<String, Value>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let bytes = STANDARD
        .decode(raw)
        .or_else(|_| STANDARD_NO_PAD.decode(raw))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Claims for a gateway-identified caller, from UserInfo (`sub`, `preferred_username`,
/// `email`, `name`, `groups`). A userinfo without `sub` or a name is not an identity.
pub(crate) fn gateway_claims(info: &serde_json::Map<String, Value>) -> Option<Claims> {
    let text = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_owned);
    let preferred_username = text("preferred_username");
    let email = text("email");
    let sub = text("sub")
        .or_else(|| preferred_username.clone())
        .or_else(|| email.clone())?;
    Some(Claims {
        iss: "gateway".to_owned(),
        sub,
        aud: Audience::Many(Vec::new()),
        // The gateway's session, not a token, bounds this identity.
        exp: i64::MAX,
        iat: None,
        nbf: None,
        auth_time: None,
        azp: None,
        uid: None,
        scope: None,
        email,
        preferred_username,
        name: text("name"),
        groups: info
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_parse_cidrs_and_addresses() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), " 127.0.0.1 ".into(), "".into()])
            .expect("parse");
        assert!(t.contains("10.1.2.3".parse().expect("ip")));
        assert!(t.contains("127.0.0.1".parse().expect("ip")));
        assert!(t.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!t.contains("192.168.1.1".parse().expect("ip")));
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn userinfo_decoding() {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        let json =
            r#"{"sub":"abc","preferred_username":"jane@example.org","email":"jane@example.org"}"#;
        let padded = STANDARD.encode(json);
        let info = decode_userinfo(&padded).expect("padded");
        assert_eq!(
            gateway_claims(&info)
                .expect("claims")
                .preferred_username
                .as_deref(),
            Some("jane@example.org")
        );
        assert!(decode_userinfo(&STANDARD_NO_PAD.encode(json)).is_some());
        assert!(decode_userinfo("%%%not base64").is_none());
        assert!(decode_userinfo(&STANDARD.encode("[1,2]")).is_none());
        assert!(decode_userinfo(&STANDARD.encode("not json")).is_none());
        assert!(gateway_claims(&serde_json::Map::new()).is_none());
    }

    mod props {
        use super::*;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        use proptest::prelude::*;
        use serde_json::json;

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                ".{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,8}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::default())]

            /// Whatever a gateway sends: an answer, never a panic.
            #[test]
            fn any_header_text_is_answered(raw in ".{0,200}") {
                if let Some(info) = decode_userinfo(&raw) {
                    let _ = gateway_claims(&info);
                }
            }

            /// Base64 of any bytes (not always JSON, not always UTF-8).
            #[test]
            fn any_base64_is_answered(bytes in prop::collection::vec(any::<u8>(), 0..200), padded in any::<bool>()) {
                let raw = if padded { STANDARD.encode(&bytes) } else { STANDARD_NO_PAD.encode(&bytes) };
                if let Some(info) = decode_userinfo(&raw) {
                    let _ = gateway_claims(&info);
                }
            }

            /// A JSON object encoded as APISIX does (padded) or unpadded comes back as it
            /// was; any other JSON value is not userinfo.
            #[test]
            fn userinfo_round_trips(value in any_json(), padded in any::<bool>()) {
                let text = value.to_string();
                let raw = if padded { STANDARD.encode(&text) } else { STANDARD_NO_PAD.encode(&text) };
                match value {
                    Value::Object(map) => prop_assert_eq!(decode_userinfo(&raw), Some(map)),
                    _ => prop_assert_eq!(decode_userinfo(&raw), None),
                }
            }

            /// The identity is `sub`, else the username, else the email; groups are the
            /// strings of `groups`.
            #[test]
            fn claims_come_from_the_userinfo(
                sub in proptest::option::of(".{0,12}"),
                username in proptest::option::of(".{0,12}"),
                email in proptest::option::of(".{0,12}"),
                groups in prop::collection::vec(any_json(), 0..4),
            ) {
                let mut info = serde_json::Map::new();
                for (key, value) in [("sub", &sub), ("preferred_username", &username), ("email", &email)] {
                    if let Some(v) = value {
                        info.insert(key.to_owned(), json!(v));
                    }
                }
                info.insert("groups".to_owned(), Value::Array(groups.clone()));
                let decoded = decode_userinfo(&STANDARD.encode(Value::Object(info).to_string()))
                    .expect("an object");
                let claims = gateway_claims(&decoded);
                let expected_sub = sub.or(username).or(email);
                prop_assert_eq!(claims.as_ref().map(|c| c.sub.clone()), expected_sub);
                if let Some(claims) = claims {
                    let strings: Vec<String> = groups.iter().filter_map(Value::as_str).map(str::to_owned).collect();
                    prop_assert_eq!(claims.groups, strings);
                }
            }
        }
    }
}
