//! JWT-protected request vs `/livez`: what verifying a token costs. `/api/whoami` needs a
//! valid RS256 access token (signature, iss, aud, exp checked on every request) and no
//! database; `/livez` needs nothing. Same concurrency, same connections, same run.

use std::time::Duration;

use idsync_testkit::oidc::TokenSpec;

use crate::support::{BoxError, ScratchDb, closed_loop, ms, serve_with_issuer};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 8)]
    seconds: u64,
}

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_auth").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    result
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(), BoxError> {
    let (issuer, server) = serve_with_issuer(&db.url, &[]).await?;
    let token = issuer.token(&TokenSpec::new().sub("7").exp_in(3600));
    let addr = server.addr;
    let livez =
        move |_: usize, _: u64| format!("GET /livez HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let token: &'static str = Box::leak(token.into_boxed_str());
    let whoami = move |_: usize, _: u64| {
        format!("GET /api/whoami HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
            .into_bytes()
    };
    let duration = Duration::from_secs(args.seconds);
    // Warm-up, including the first JWKS fetch.
    closed_loop(addr, args.concurrency, Duration::from_secs(1), 200, whoami).await;
    let base = closed_loop(addr, args.concurrency, duration, 200, livez).await;
    let auth = closed_loop(addr, args.concurrency, duration, 200, whoami).await;
    server.stop().await;

    println!();
    println!(
        "JWT-protected request vs /livez, {} connections, {} s each, loopback",
        args.concurrency, args.seconds
    );
    println!(
        "{:<48} {:>12} {:>10} {:>10} {:>8}",
        "", "per second", "p50", "p99", "failed"
    );
    println!(
        "{:<48} {:>12.0} {:>10} {:>10} {:>8}",
        "GET /api/whoami (RS256 token verified)",
        auth.rate,
        ms(auth.p50),
        ms(auth.p99),
        auth.failed
    );
    println!(
        "{:<48} {:>12.0} {:>10} {:>10} {:>8}",
        "baseline: GET /livez",
        base.rate,
        ms(base.p50),
        ms(base.p99),
        base.failed
    );
    println!(
        "ratio protected / livez: {:.2} (target >= 0.70)",
        auth.rate / base.rate
    );
    Ok(())
}
