//! The read path: `GET /api/me`, `GET /api/users/{pk}` and a page of `GET /api/users`,
//! each with valid tokens of many distinct users, beside pgbench running the same SQL
//! against the same `users` table at the same concurrency, in the same run. idsync adds
//! token verification, a pool checkout, decoding and JSON to what Postgres does; the
//! ratio says how much of Postgres's own rate survives that.

use std::time::Duration;

use idsync_testkit::oidc::TokenSpec;

use crate::support::{BoxError, ScratchDb, closed_loop, ms, pgbench, serve_with_issuer};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Connections (and pgbench clients).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Users in the read model.
    #[arg(long, default_value_t = 10_000)]
    users: i64,
    /// Distinct callers (tokens), users 1..=N.
    #[arg(long, default_value_t = 1_000)]
    callers: i64,
}

/// The columns the API reads for one user (the contract's user (docs/contract.md)).
const COLUMNS: &str = "pk, uuid, username, email, name, is_active, type, groups, registered_at, updated_at, deleted_at, uid, position";

pub(crate) async fn run(server_url: &str, args: Args) -> Result<(), BoxError> {
    let db = ScratchDb::create(server_url, "idsync_bench_read").await?;
    let result = measure(&db, &args).await;
    db.drop_db().await?;
    result
}

struct Row {
    what: &'static str,
    idsync: crate::support::Load,
    pgbench: f64,
}

async fn measure(db: &ScratchDb, args: &Args) -> Result<(), BoxError> {
    let (issuer, server) =
        serve_with_issuer(&db.url, &[("IDSYNC_RECONCILE_INTERVAL", "0")]).await?;
    fill_users(&db.url, args.users).await?;

    let user_tokens: Vec<String> = (1..=args.callers)
        .map(|pk| {
            issuer.token(
                &TokenSpec::new()
                    .sub(pk.to_string())
                    .preferred_username(format!("user{pk}"))
                    .exp_in(3600),
            )
        })
        .collect();
    let admin = issuer.token(
        &TokenSpec::new()
            .sub("1")
            .groups(["authentik Admins"])
            .exp_in(3600),
    );
    let user_tokens: &'static [String] = Box::leak(user_tokens.into_boxed_slice());
    let admin: &'static str = Box::leak(admin.into_boxed_str());
    let callers = args.callers;
    let users = args.users;
    let addr = server.addr;
    // Which caller a request comes from: spread over all of them.
    let pick = move |sender: usize, n: u64| -> usize {
        ((sender as u64)
            .wrapping_mul(7919)
            .wrapping_add(n.wrapping_mul(104_729))
            % callers as u64) as usize
    };
    let me = move |sender: usize, n: u64| {
        let token = &user_tokens[pick(sender, n)];
        format!("GET /api/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
            .into_bytes()
    };
    let one = move |sender: usize, n: u64| {
        let i = pick(sender, n);
        let token = &user_tokens[i];
        let pk = i + 1;
        format!(
            "GET /api/users/{pk} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .into_bytes()
    };
    let page = move |sender: usize, n: u64| {
        let after = pick(sender, n) as i64 * (users - 100).max(0) / callers;
        format!(
            "GET /api/users?after={after}&limit=100 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\r\n"
        )
        .into_bytes()
    };
    let duration = Duration::from_secs(args.seconds);
    // Warm-up: every token verified once (they are then remembered), JWKS fetched.
    closed_loop(addr, args.concurrency, Duration::from_secs(2), 200, me).await;
    closed_loop(addr, args.concurrency, Duration::from_secs(2), 200, one).await;
    closed_loop(addr, args.concurrency, Duration::from_secs(1), 200, page).await;

    let one_sql =
        format!("\\set pk random(1, {callers})\nSELECT {COLUMNS} FROM users WHERE pk = :pk;\n");
    // The very statement idsync runs for a page (a JSON array built by Postgres).
    let page_query = idsync_store::projections::users::search_sql(&Default::default())
        .replace("$1", ":after")
        .replace("$2", "100");
    let page_sql = format!(
        "\\set after random(0, {})\n{page_query};\n",
        (users - 100).max(0)
    );
    let rows = vec![
        Row {
            what: "GET /api/me",
            idsync: closed_loop(addr, args.concurrency, duration, 200, me).await,
            pgbench: run_pgbench(&db.url, args, &one_sql).await?,
        },
        Row {
            what: "GET /api/users/{pk}",
            idsync: closed_loop(addr, args.concurrency, duration, 200, one).await,
            pgbench: run_pgbench(&db.url, args, &one_sql).await?,
        },
        Row {
            what: "GET /api/users (a page of 100)",
            idsync: closed_loop(addr, args.concurrency, duration, 200, page).await,
            pgbench: run_pgbench(&db.url, args, &page_sql).await?,
        },
    ];
    let whoami = move |sender: usize, n: u64| {
        let token = &user_tokens[pick(sender, n)];
        format!("GET /api/whoami HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
            .into_bytes()
    };
    let context = closed_loop(addr, args.concurrency, duration, 200, whoami).await;
    server.stop().await;

    println!();
    println!(
        "Read path, {} connections, {} s each, {} users, {} distinct callers, loopback",
        args.concurrency, args.seconds, args.users, args.callers
    );
    println!(
        "{:<34} {:>11} {:>10} {:>10} {:>7} {:>14} {:>7}",
        "", "idsync/s", "p50", "p99", "failed", "pgbench same SQL", "ratio"
    );
    for row in &rows {
        println!(
            "{:<34} {:>11.0} {:>10} {:>10} {:>7} {:>14.0} {:>7.2}",
            row.what,
            row.idsync.rate,
            ms(row.idsync.p50),
            ms(row.idsync.p99),
            row.idsync.failed,
            row.pgbench,
            row.idsync.rate / row.pgbench
        );
    }
    println!(
        "{:<34} {:>11.0} {:>10} {:>10} {:>7}",
        "context: GET /api/whoami (no DB)",
        context.rate,
        ms(context.p50),
        ms(context.p99),
        context.failed
    );
    println!(
        "targets: /api/me and /api/users/{{pk}} >= 0.70 x pgbench with p99 < 5 ms; a page >= 0.70 x pgbench"
    );
    Ok(())
}

/// `users` rows straight into the read model (the read path does not read events).
async fn fill_users(url: &str, users: i64) -> Result<(), BoxError> {
    let pool = sqlx::PgPool::connect(url).await?;
    // serve migrates at start; wait for the table.
    for _ in 0..100 {
        let ready: bool = sqlx::query_scalar("SELECT to_regclass('users') IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query(
        "INSERT INTO users (pk, uuid, username, email, name, is_active, type, groups,
                            registered_at, updated_at, deleted_at, uid, position)
         SELECT g, gen_random_uuid(), 'user' || g, 'user' || g || '@example.org',
                'User Number ' || g, true, 'internal', ARRAY['staff', 'group ' || (g % 10)],
                now() - interval '1 day', now(), NULL, md5(g::text) || md5((g + 1)::text), g
           FROM generate_series(1, $1) g",
    )
    .bind(users)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE users").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

async fn run_pgbench(url: &str, args: &Args, sql: &str) -> Result<f64, BoxError> {
    let script = std::env::temp_dir().join(format!("idsync-read-{}.sql", std::process::id()));
    std::fs::write(&script, sql)?;
    let out = tokio::process::Command::new(pgbench()?)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &args.concurrency.to_string(),
            "-j",
            "2",
            "-T",
        ])
        .arg(args.seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .await?;
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {stdout}").into())
}
