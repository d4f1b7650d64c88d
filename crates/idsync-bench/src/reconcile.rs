//! Reconcile: `idsync reconcile` against the Authentik stub holding N users,
//! (a) cold: an empty store, so N registrations, and (b) steady state: nothing changed.
//! Each run is printed beside the stub's own time to serve the same listing, measured
//! by paging through the stub alone with the client settings reconcile uses (page size
//! 100, the first page, then the rest 8 at a time, bodies read in full). The target
//! is reconcile's time beyond that: < 30 s for 100,000 users.
//!
//! The stub runs in this process; idsync runs as its own process, the real command.

use std::time::{Duration, Instant};

use idsync_testkit::authentik::{AuthentikStub, fixtures};

use crate::support::{BoxError, ScratchDb, idsync_binary, migrate};

const TOKEN: &str = "bench-api-token";
/// Reconcile's own listing settings (`Options::default()` in idsync-server).
const PAGE_SIZE: u32 = 100;
const PAGES_IN_FLIGHT: usize = 8;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Users in the stub's directory.
    #[arg(long, default_value_t = 100_000)]
    users: i64,
}

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_reconcile").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    result
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(), BoxError> {
    migrate(&db.url).await?;
    eprintln!("starting the Authentik stub with {} users...", args.users);
    let stub = AuthentikStub::start(TOKEN).await;
    stub.upsert_many((1..=args.users).map(|pk| {
        let user = fixtures::user(pk);
        // Some variety: a third in a group, one in fifty inactive.
        let user = if pk % 3 == 0 {
            user.groups(&["staff"])
        } else {
            user
        };
        if pk % 50 == 0 {
            user.active(false).json()
        } else {
            user.json()
        }
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;

    eprintln!("cold: the stub's listing alone, then idsync reconcile into an empty store...");
    let cold_listing = list_alone(&client, &stub).await?;
    let (cold, cold_summary) = reconcile(db, &stub).await?;
    let expected = format!(
        "registered {}, updated 0, deleted 0, unchanged 0, conflicts 0",
        args.users
    );
    if cold_summary != expected {
        return Err(format!("cold run: {cold_summary:?}, expected {expected:?}").into());
    }

    // The read model after the cold run, as serve's projector would have it.
    eprintln!("idsync replay (the read model for the steady-state run)...");
    let t = Instant::now();
    let out = tokio::process::Command::new(idsync_binary()?)
        .args(["replay", "--projection", "users"])
        .env("DATABASE_URL", &db.url)
        .env("IDSYNC_DATA_KEY", "development")
        .env("IDSYNC_LOG_FORMAT", "json")
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "idsync replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let replay = t.elapsed();

    eprintln!("steady state: the stub's listing alone, then idsync reconcile again...");
    let steady_listing = list_alone(&client, &stub).await?;
    let (steady, steady_summary) = reconcile(db, &stub).await?;
    let expected = format!(
        "registered 0, updated 0, deleted 0, unchanged {}, conflicts 0",
        args.users
    );
    if steady_summary != expected {
        return Err(format!("steady run: {steady_summary:?}, expected {expected:?}").into());
    }
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    if events != args.users {
        return Err(format!("{events} events stored, expected {}", args.users).into());
    }

    println!();
    println!(
        "reconcile of {} users against the Authentik stub (page size {PAGE_SIZE}, {PAGES_IN_FLIGHT} pages in flight)",
        args.users
    );
    println!(
        "{:<44} {:>10} {:>16} {:>16}",
        "", "idsync", "stub alone", "idsync - stub"
    );
    for (name, total, listing) in [
        ("(a) cold: empty store, all registered", cold, cold_listing),
        ("(b) steady state: nothing changed", steady, steady_listing),
    ] {
        println!(
            "{:<44} {:>9.2}s {:>15.2}s {:>15.2}s",
            name,
            total.as_secs_f64(),
            listing.as_secs_f64(),
            total.as_secs_f64() - listing.as_secs_f64()
        );
    }
    println!(
        "cold: {:.0} users/s registered (whole command); target: idsync - stub < 30 s",
        args.users as f64 / cold.as_secs_f64()
    );
    println!(
        "{events} events stored; idsync replay of them took {:.2}s",
        replay.as_secs_f64()
    );
    Ok(())
}

/// `idsync reconcile` against `stub`: its time (process start to exit) and its summary.
async fn reconcile(db: &ScratchDb, stub: &AuthentikStub) -> Result<(Duration, String), BoxError> {
    let t = Instant::now();
    let out = tokio::process::Command::new(idsync_binary()?)
        .arg("reconcile")
        .env("DATABASE_URL", &db.url)
        // The key the cold run encrypted with; a second run refuses to guess it.
        .env("IDSYNC_DATA_KEY", "development")
        .env("IDSYNC_AUTHENTIK_URL", stub.url())
        .env("IDSYNC_AUTHENTIK_TOKEN", TOKEN)
        .env("IDSYNC_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "idsync reconcile failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let summary = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((took, summary))
}

/// The stub serving the whole listing, as reconcile pages it: page 1 (which tells how
/// many there are), then the others `PAGES_IN_FLIGHT` at a time, every body read.
async fn list_alone(client: &reqwest::Client, stub: &AuthentikStub) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let page = |number: u64| {
        let request = client
            .get(format!(
                "{}/api/v3/core/users/?page={number}&page_size={PAGE_SIZE}",
                stub.url()
            ))
            .bearer_auth(TOKEN)
            .header("accept", "application/json");
        async move {
            let response = request.send().await?.error_for_status()?;
            Ok::<_, BoxError>(response.bytes().await?)
        }
    };
    let first: serde_json::Value = serde_json::from_slice(&page(1).await?)?;
    let total_pages = first["pagination"]["total_pages"]
        .as_u64()
        .ok_or("no total_pages in the stub's answer")?;
    let mut next = 2;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < PAGES_IN_FLIGHT && next <= total_pages {
            in_flight.spawn(page(next));
            next += 1;
        }
        match in_flight.join_next().await {
            Some(result) => {
                result??;
            }
            None => break,
        }
    }
    Ok(t.elapsed())
}
