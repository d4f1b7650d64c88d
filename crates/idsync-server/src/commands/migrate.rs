use idsync_store::db::{self, DatabaseState};

use crate::CliError;
use crate::cli::GlobalArgs;

/// `idsync migrate`: create the database if missing, apply migrations, say what happened.
pub async fn run(global: &GlobalArgs) -> Result<(), CliError> {
    let name = db::database_name(&global.database_url).unwrap_or_else(|| "(default)".into());
    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let report = db::migrate(&global.database_url, &pool).await?;
    if report.database == Some(DatabaseState::Created) {
        println!("created database {name}");
    }
    if report.applied.is_empty() {
        println!("database {name} is up to date");
    } else {
        let versions: Vec<String> = report.applied.iter().map(i64::to_string).collect();
        println!(
            "applied {} migration(s) to {name}: {}",
            report.applied.len(),
            versions.join(", ")
        );
    }
    pool.close().await;
    Ok(())
}
