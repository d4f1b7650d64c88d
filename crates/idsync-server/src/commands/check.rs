//! `idsync check`: one line per dependency, OK, WARN or exactly why not (FAIL);
//! non-zero if any failed. It takes the same settings as `serve`, so it checks what
//! `serve` would use.

use idsync_authentik::{AuthentikClient, ClientError};
use idsync_store::db;
use sqlx::PgPool;

use crate::CliError;
use crate::auth::SubjectField;
use crate::cli::{GlobalArgs, ServeArgs};

/// One line of the report.
enum Verdict {
    Ok(String),
    /// Works, but not as it should be (too much privilege, nothing to resolve yet).
    Warn(String),
    Fail(String),
}

impl From<Result<String, String>> for Verdict {
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Verdict::Ok(detail),
            Err(reason) => Verdict::Fail(reason),
        }
    }
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), CliError> {
    let mut failed = 0;
    let mut report = |name: &str, verdict: Verdict| match verdict {
        Verdict::Ok(detail) => println!("OK    {name}: {detail}"),
        Verdict::Warn(detail) => println!("WARN  {name}: {detail}"),
        Verdict::Fail(reason) => {
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
            Verdict::Ok("IDSYNC_WEBHOOK_SECRET is set".to_owned())
        } else {
            Verdict::Fail("IDSYNC_WEBHOOK_SECRET is not set (serve refuses to start)".to_owned())
        },
    );

    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let database = check_database(global, &pool).await;
    let database_ok = database.is_ok();
    report("database", database.into());

    match args.authentik.client() {
        Err(e) => report("authentik api", Verdict::Fail(e.to_string())),
        Ok(None) => report(
            "authentik api",
            Verdict::Fail("IDSYNC_AUTHENTIK_URL and IDSYNC_AUTHENTIK_TOKEN are not set (webhooks would wait in the inbox)".to_owned()),
        ),
        Ok(Some(client)) => {
            report("authentik api", check_reading(&client).await.into());
            report("authentik token", check_privileges(&client).await);
        }
    }

    let oidc = match args.oidc_verifier() {
        Err(e) => Err(e.to_string()),
        Ok(None) => Err("IDSYNC_OIDC_ISSUER is not set (the protected API answers 503)".to_owned()),
        Ok(Some(verifier)) => verifier.check().await.map_err(|e| e.to_string()),
    };
    report("oidc issuer", oidc.into());

    if database_ok {
        report(
            "oidc subject",
            check_subject(&pool, args.oidc_subject).await,
        );
    }
    pool.close().await;

    if failed > 0 {
        return Err(CliError::Config(format!("{failed} check(s) failed")));
    }
    Ok(())
}

async fn check_database(global: &GlobalArgs, pool: &PgPool) -> Result<String, String> {
    let name = db::database_name(&global.database_url).unwrap_or_else(|| "?".to_owned());
    db::ping(pool).await.map_err(|e| e.to_string())?;
    let problems = db::migration_problems(pool)
        .await
        .map_err(|e| e.to_string())?;
    if problems.is_empty() {
        Ok(format!("{name} answers; migrations applied"))
    } else {
        Err(problems.join("; "))
    }
}

/// The token may read what idsync reads: users, and groups (for group events).
async fn check_reading(client: &AuthentikClient) -> Result<String, String> {
    let base = client.base_url();
    let users = client.list_users(1, 1).await.map_err(|e| {
        format!(
            "{base}: cannot list users: {e}{}",
            permission_hint(&e, "view_user")
        )
    })?;
    client.probe_groups().await.map_err(|e| {
        format!(
            "{base}: cannot list groups: {e}{}",
            permission_hint(&e, "view_group")
        )
    })?;
    Ok(format!(
        "{base} answers; the token may read users ({} users) and groups",
        users.pagination.count
    ))
}

fn permission_hint(error: &ClientError, permission: &str) -> String {
    match error {
        ClientError::Auth { .. } => format!(
            " (the token's user needs authentik_core.{permission}; authentik/blueprints/idsync-sync.yaml grants it)"
        ),
        _ => String::new(),
    }
}

/// Least privilege: idsync only reads users and groups, so a superuser's token, or one
/// with system permissions, can do far more than a leak should allow.
async fn check_privileges(client: &AuthentikClient) -> Verdict {
    match client.me().await {
        Err(e) => Verdict::Warn(format!("cannot tell what the token may do: {e}")),
        Ok(me) if me.is_superuser => Verdict::Warn(format!(
            "the token belongs to {:?}, a superuser: it may do anything in Authentik, while \
             idsync needs only authentik_core.view_user and view_group (use the service \
             account of authentik/blueprints/idsync-sync.yaml)",
            me.username
        )),
        Ok(me) if !me.system_permissions.is_empty() => Verdict::Warn(format!(
            "the token's user {:?} holds system permissions idsync does not need: {}",
            me.username,
            me.system_permissions.join(", ")
        )),
        Ok(me) => Verdict::Ok(format!(
            "belongs to {:?}: no superuser, no system permissions",
            me.username
        )),
    }
}

/// Whether `sub` can find anyone: `IDSYNC_OIDC_SUBJECT` names a field of the read model,
/// and a field no synced user has (a `uid` before the first reconcile filled them in)
/// resolves no caller, so `/api/me` answers 404 for everyone.
async fn check_subject(pool: &PgPool, field: SubjectField) -> Verdict {
    match crate::auth::subject_coverage(pool, field).await {
        Err(e) => Verdict::Fail(format!("cannot read the users read model: {e}")),
        Ok(coverage) => coverage.verdict(field).map_or_else(
            || {
                Verdict::Ok(format!(
                    "IDSYNC_OIDC_SUBJECT={}: {} of {} synced users can be found by it",
                    field.name(),
                    coverage.resolvable,
                    coverage.users
                ))
            },
            Verdict::Fail,
        ),
    }
}
