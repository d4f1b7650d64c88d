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
pub(super) fn gateway_claims(info: &serde_json::Map<String, Value>) -> Option<Claims> {
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
}
