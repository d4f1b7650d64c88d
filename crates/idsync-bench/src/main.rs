//! `idsync-bench`: benchmarks that print each figure beside a baseline measured in the
//! same run, on the same machine. Run through `scripts/bench` (which builds in release).
//!
//! Everything here talks to loopback only, is bounded in time, and stops by itself.

mod intake;
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Intake(args) => intake::run(&cli.database_url, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
