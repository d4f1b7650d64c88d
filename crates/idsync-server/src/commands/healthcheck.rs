//! `idsync healthcheck`: asks a running idsync's `/readyz`, for container health checks
//! (the image has no curl). Exit 0 when it answers 200; otherwise 1 with the reason.

use crate::CliError;
use crate::cli::HealthcheckArgs;

pub async fn run(args: HealthcheckArgs) -> Result<(), CliError> {
    let url = args.url();
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .map_err(|source| CliError::Http {
            what: "HTTP client".to_owned(),
            source,
        })?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|source| CliError::Http {
            what: format!("{url}: no answer"),
            source,
        })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("ready: {url}");
        Ok(())
    } else {
        // /readyz's body lists the reasons; keep the one line short.
        let reasons = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("reasons").map(ToString::to_string))
            .unwrap_or(body);
        Err(CliError::Config(format!(
            "{url}: {status}: {}",
            reasons.chars().take(500).collect::<String>()
        )))
    }
}
