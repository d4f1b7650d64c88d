use std::process::ExitCode;

use idsync_server::cli::{self, Command};
use idsync_server::{commands, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(cli.global.log_format);
    let result = match cli.command.unwrap_or_default() {
        Command::Serve(args) => commands::serve::run(&cli.global, *args).await,
        Command::Migrate => commands::migrate::run(&cli.global).await,
        Command::Inbox(cmd) => commands::inbox::run(&cli.global, cmd).await,
        Command::Check(args) => commands::check::run(&cli.global, *args).await,
        Command::Replay(args) => commands::replay::run(&cli.global, args).await,
        Command::Reconcile(args) => commands::reconcile::run(&cli.global, args).await,
        Command::Healthcheck(args) => commands::healthcheck::run(args).await,
        Command::Keygen => commands::privacy::keygen(),
        Command::Erase(args) => commands::privacy::erase(&cli.global, args).await,
        Command::EncryptEvents(args) => commands::privacy::encrypt_events(&cli.global, args).await,
        Command::RotateDataKey(args) => commands::privacy::rotate_data_key(&cli.global, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The contract (docs/contract.md): non-zero with a one-line reason on stderr.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
