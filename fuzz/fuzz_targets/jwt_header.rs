//! The bearer token's header, read before any key lookup: any text gets an error or an
//! asymmetric algorithm, never `none` or HMAC, never a panic.
#![no_main]

use idsync_oidc::fuzzing::token_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    if let Ok((alg, _kid)) = token_header(token) {
        assert!(
            !alg.starts_with("HS") && !alg.eq_ignore_ascii_case("none"),
            "accepted {alg}"
        );
    }
});
