//! `idsync check`: one line per dependency, OK or exactly why not; non-zero if any failed.
//! It takes the same settings as `serve`, so it checks what `serve` would use.

use idsync_store::db;

use crate::CliError;
use crate::cli::{GlobalArgs, ServeArgs};

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), CliError> {
    let mut failed = 0;
    let mut report = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("OK    {name}: {detail}"),
        Err(reason) => {
            failed += 1;
            println!("FAIL  {name}: {reason}");
        }
    };

    let has_secret = args.webhook_secret.as_ref().is_some_and(|s| {
        use secrecy::ExposeSecret;
        !s.expose_secret().trim().is_empty()
    });
    report(
        "webhook secret",
        if has_secret {
            Ok("IDSYNC_WEBHOOK_SECRET is set".to_owned())
        } else {
            Err("IDSYNC_WEBHOOK_SECRET is not set (serve refuses to start)".to_owned())
        },
    );

    report("database", check_database(global).await);

    let authentik = match args.authentik.client() {
        Err(e) => Err(e.to_string()),
        Ok(None) => Err("IDSYNC_AUTHENTIK_URL and IDSYNC_AUTHENTIK_TOKEN are not set (webhooks would wait in the inbox)".to_owned()),
        Ok(Some(client)) => match client.list_users(1, 1).await {
            Ok(page) => Ok(format!(
                "{} answers; the token may list users ({} users)",
                client.base_url(),
                page.pagination.count
            )),
            Err(e) => Err(format!("{}: {e}", client.base_url())),
        },
    };
    report("authentik api", authentik);

    let oidc = match args.oidc_verifier() {
        Err(e) => Err(e.to_string()),
        Ok(None) => Err("IDSYNC_OIDC_ISSUER is not set (the protected API answers 503)".to_owned()),
        Ok(Some(verifier)) => verifier.check().await.map_err(|e| e.to_string()),
    };
    report("oidc issuer", oidc);

    if failed > 0 {
        return Err(CliError::Config(format!("{failed} check(s) failed")));
    }
    Ok(())
}

async fn check_database(global: &GlobalArgs) -> Result<String, String> {
    let name = db::database_name(&global.database_url).unwrap_or_else(|| "?".to_owned());
    let pool =
        db::lazy_pool(&global.database_url, &global.pool_config()).map_err(|e| e.to_string())?;
    let result = async {
        db::ping(&pool).await.map_err(|e| e.to_string())?;
        let problems = db::migration_problems(&pool)
            .await
            .map_err(|e| e.to_string())?;
        if problems.is_empty() {
            Ok(format!("{name} answers; migrations applied"))
        } else {
            Err(problems.join("; "))
        }
    }
    .await;
    pool.close().await;
    result
}
