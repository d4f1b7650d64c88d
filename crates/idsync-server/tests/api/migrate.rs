use sqlx::PgPool;

use crate::helpers::{admin, binary, url_for};

async fn migrate(url: &str) -> String {
    let output = binary()
        .arg("migrate")
        .env("DATABASE_URL", url)
        .output()
        .await
        .expect("run idsync migrate");
    assert!(
        output.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn schema_of(url: &str) -> Vec<(String, i64)> {
    let pool = PgPool::connect(url).await.expect("connect");
    let rows = sqlx::query_as(
        "SELECT version::text, (SELECT count(*) FROM events) FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .expect("migrations table");
    pool.close().await;
    rows
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_is_idempotent() {
    let name = format!("idsync_migrate_{}", uuid::Uuid::new_v4().simple());
    let url = url_for(&name);

    let first = migrate(&url).await;
    assert!(
        first.contains(&format!("created database {name}")),
        "{first}"
    );
    assert!(first.contains("applied"), "{first}");
    let after_first = schema_of(&url).await;
    assert!(!after_first.is_empty());

    let second = migrate(&url).await;
    assert!(!second.contains("created"), "{second}");
    assert!(second.contains("up to date"), "{second}");
    assert_eq!(
        schema_of(&url).await,
        after_first,
        "a second run changes nothing"
    );

    let admin = admin().await;
    sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
        .execute(&admin)
        .await
        .expect("drop test database");
}

#[tokio::test]
async fn migrate_reports_an_unreachable_database_in_one_line() {
    let output = binary()
        .arg("migrate")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/idsync")
        .output()
        .await
        .expect("run idsync migrate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
}
