//! Does the configured issuer match the one the provider names in its discovery
//! document? Tokens are checked against the configured issuer as an exact string, so a
//! missing trailing slash or another host means every token is refused. Authentik builds
//! the issuer from the request's Host header, though: discovery fetched from an internal
//! host (`authentik-server:9000`) names that host, while the tokens browsers get carry
//! the public one. That split is expected, and told apart from a mistake here.

use reqwest::Url;

/// How the configured issuer compares with the discovery document's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerMatch {
    /// The same string.
    Same,
    /// Same path, another scheme/host/port, and discovery was fetched from that other
    /// origin (IDSYNC_OIDC_DISCOVERY_URL): the provider named the host it was asked on.
    /// Tokens must carry the configured (public) issuer, which they do when browsers
    /// reach the provider at the configured origin.
    PublicInternalSplit { discovered: String },
    /// Tokens cannot carry the configured issuer; the text says what differs and what to
    /// set.
    Mismatch(String),
}

/// Compares `configured` with `discovered` (the discovery document's `issuer`), where
/// discovery was fetched from `discovery_url`.
pub fn compare(configured: &str, discovered: &str, discovery_url: &str) -> IssuerMatch {
    if configured == discovered {
        return IssuerMatch::Same;
    }
    let trimmed = |s: &str| s.trim_end_matches('/').to_owned();
    if trimmed(configured) == trimmed(discovered) {
        let (has, lacks) = if discovered.ends_with('/') {
            ("ends with", "lacks")
        } else {
            ("does not end with", "has")
        };
        return IssuerMatch::Mismatch(format!(
            "the provider's issuer {discovered:?} {has} a slash that IDSYNC_OIDC_ISSUER \
             {configured:?} {lacks}: tokens carry the provider's, so set IDSYNC_OIDC_ISSUER={discovered}"
        ));
    }
    let (Ok(conf), Ok(disc), Ok(fetched)) = (
        Url::parse(configured),
        Url::parse(discovered),
        Url::parse(discovery_url),
    ) else {
        return IssuerMatch::Mismatch(format!(
            "the provider names the issuer {discovered:?}, IDSYNC_OIDC_ISSUER is {configured:?}"
        ));
    };
    if conf.path() != disc.path() {
        return IssuerMatch::Mismatch(format!(
            "the provider's issuer path {:?} differs from IDSYNC_OIDC_ISSUER's {:?} (another \
             application slug?): tokens will carry {discovered}",
            disc.path(),
            conf.path()
        ));
    }
    let origin = |u: &Url| u.origin().ascii_serialization();
    if origin(&disc) == origin(&fetched) && origin(&conf) != origin(&fetched) {
        return IssuerMatch::PublicInternalSplit {
            discovered: discovered.to_owned(),
        };
    }
    IssuerMatch::Mismatch(format!(
        "the provider names the issuer {discovered:?} (host {}), IDSYNC_OIDC_ISSUER says \
         {configured:?} (host {}): tokens carry the host the browser used to reach the \
         provider, so set IDSYNC_OIDC_ISSUER to that (e.g. localhost and 127.0.0.1 differ)",
        disc.host_str().unwrap_or("?"),
        conf.host_str().unwrap_or("?"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "http://localhost:9000/application/o/idsync/";
    const INTERNAL: &str = "http://authentik-server:9000/application/o/idsync/";
    const INTERNAL_DISCOVERY: &str =
        "http://authentik-server:9000/application/o/idsync/.well-known/openid-configuration";
    const PUBLIC_DISCOVERY: &str =
        "http://localhost:9000/application/o/idsync/.well-known/openid-configuration";

    #[test]
    fn the_same_issuer_matches() {
        assert_eq!(compare(PUBLIC, PUBLIC, PUBLIC_DISCOVERY), IssuerMatch::Same);
    }

    #[test]
    fn the_compose_split_is_expected() {
        assert_eq!(
            compare(PUBLIC, INTERNAL, INTERNAL_DISCOVERY),
            IssuerMatch::PublicInternalSplit {
                discovered: INTERNAL.to_owned()
            }
        );
    }

    #[test]
    fn a_missing_trailing_slash_is_named() {
        let IssuerMatch::Mismatch(why) = compare(
            "http://localhost:9000/application/o/idsync",
            PUBLIC,
            PUBLIC_DISCOVERY,
        ) else {
            panic!("a mismatch")
        };
        assert!(why.contains("slash"), "{why}");
        assert!(
            why.contains(&format!("IDSYNC_OIDC_ISSUER={PUBLIC}")),
            "{why}"
        );
    }

    #[test]
    fn another_host_without_a_separate_discovery_url_is_a_mistake() {
        // Discovery fetched from the configured host, yet the provider names another:
        // e.g. a proxy that rewrites Host, or localhost against 127.0.0.1.
        let IssuerMatch::Mismatch(why) = compare(
            PUBLIC,
            "http://127.0.0.1:9000/application/o/idsync/",
            PUBLIC_DISCOVERY,
        ) else {
            panic!("a mismatch")
        };
        assert!(
            why.contains("127.0.0.1") && why.contains("localhost"),
            "{why}"
        );
    }

    #[test]
    fn another_path_is_a_mistake() {
        let IssuerMatch::Mismatch(why) = compare(
            PUBLIC,
            "http://authentik-server:9000/application/o/other/",
            INTERNAL_DISCOVERY,
        ) else {
            panic!("a mismatch")
        };
        assert!(why.contains("slug"), "{why}");
    }
}
