//! A local OIDC issuer for trying idsync without Authentik: it serves discovery and a
//! JWKS on loopback, prints the settings to give `idsync serve`, and mints tokens shaped
//! like Authentik's (an admin's and a plain user's). Runs until Ctrl-C.
//!
//!     cargo run -p idsync-testkit --bin idsync-dev-issuer

use idsync_testkit::oidc::{TestIssuer, TokenSpec};

const ADMIN_GROUP: &str = "authentik Admins";

#[tokio::main]
async fn main() {
    let issuer = TestIssuer::start().await;
    let admin = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .preferred_username("akadmin")
            .groups([ADMIN_GROUP])
            .exp_in(12 * 3600),
    );
    let user = issuer.token(
        &TokenSpec::new()
            .sub("7")
            .preferred_username("jane")
            .exp_in(12 * 3600),
    );
    println!("Local OIDC issuer for development (tokens valid 12 h). Start idsync with:\n");
    println!("  IDSYNC_OIDC_ISSUER={} \\", issuer.issuer());
    println!("  IDSYNC_OIDC_AUDIENCE={} \\", issuer.client_id());
    println!("  IDSYNC_WEBHOOK_SECRET=change-me idsync serve\n");
    println!("An admin (sub 1, group \"{ADMIN_GROUP}\"):\n\n  ADMIN_TOKEN={admin}\n");
    println!("A user (sub 7):\n\n  USER_TOKEN={user}\n");
    println!("Ctrl-C stops the issuer.");
    let _ = tokio::signal::ctrl_c().await;
}
