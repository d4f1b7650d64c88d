//! `idsync-bench`: benchmarks that print each figure beside a baseline measured in the
//! same run, on the same machine. Run through `scripts/bench` (which builds in release).
//!
//! Everything here talks to loopback only, is bounded in time, and stops by itself.

mod auth;
mod fanout;
mod intake;
mod latency;
mod read;
mod reconcile;
mod reliability;
mod replay;
mod support;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "idsync-bench",
    about = "idsync benchmarks with same-run baselines"
)]
struct Cli {
    /// Postgres server to benchmark against (a fresh database is created and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable webhook intake (202 after the inbox row commits) vs pgbench's own rate for
    /// the same single-row INSERT at the same concurrency.
    Intake(intake::Args),
    /// Replay of N events into `users`, beside cqrs-es's QueryReplay into a GenericQuery
    /// over a PostgresViewRepository, and Postgres's own time to read the same rows.
    Replay(replay::Args),
    /// A JWT-protected request answered from the token's claims (`/api/whoami`, RS256)
    /// beside `/livez`, same concurrency, same run.
    Auth(auth::Args),
    /// `idsync reconcile` of N users against the Authentik stub, cold (all registered)
    /// and in steady state (nothing changed), each beside the stub's own listing time.
    Reconcile(reconcile::Args),
    /// SSE fan-out on one process: N subscribers held open, events per second delivered
    /// to all of them in order, delivery latency, RSS per idle subscriber.
    Fanout(fanout::Args),
    /// Webhook → event on an open SSE stream, at a fixed webhook rate, with a local
    /// Authentik stub answering at once.
    Latency(latency::Args),
    /// `/api/me`, `/api/users/{pk}` and a page of `/api/users` with many callers' tokens,
    /// each beside pgbench running the same SQL at the same concurrency.
    Read(read::Args),
    /// Chaos with three replicas, a database outage, slow and hostile clients, a soak
    /// and a kid flood, each on its own throwaway PostgreSQL cluster; one table of what
    /// was held, injected, lost and duplicated (see docs/reliability.md).
    Reliability(reliability::Args),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Intake(args) => intake::run(&cli.database_url, args).await,
        Bench::Replay(args) => replay::run(&cli.database_url, args).await,
        Bench::Read(args) => read::run(&cli.database_url, args).await,
        Bench::Auth(args) => auth::run(&cli.database_url, args).await,
        Bench::Reconcile(args) => reconcile::run(&cli.database_url, args).await,
        Bench::Fanout(args) => fanout::run(&cli.database_url, args).await,
        Bench::Latency(args) => latency::run(&cli.database_url, args).await,
        Bench::Reliability(args) => reliability::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
