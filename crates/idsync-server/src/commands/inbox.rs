//! `idsync inbox list|retry`: what an operator needs to see and unstick the inbox.

use idsync_store::db;
use idsync_store::inbox::{self, Item, Status};

use crate::CliError;
use crate::cli::{GlobalArgs, InboxCommand};

pub async fn run(global: &GlobalArgs, command: InboxCommand) -> Result<(), CliError> {
    let pool = db::lazy_pool(&global.database_url, &global.pool_config())?;
    let problems = db::migration_problems(&pool).await?;
    if !problems.is_empty() {
        return Err(CliError::Config(problems.join("; ")));
    }
    match command {
        InboxCommand::List { status, limit } => {
            let status = status.as_deref().and_then(Status::parse);
            let items = inbox::list(&pool, status, limit.clamp(1, 10_000)).await?;
            print!("{}", table(&items));
            let counts = inbox::counts(&pool).await?;
            let summary: Vec<String> = counts
                .iter()
                .map(|(s, n)| format!("{} {n}", s.as_str()))
                .collect();
            println!("total: {}", summary.join(", "));
        }
        InboxCommand::Retry { id: Some(id), .. } => {
            if inbox::retry(&pool, id).await? {
                println!("item {id} is pending again");
            } else {
                let why = match inbox::get(&pool, id).await? {
                    None => "no such item".to_owned(),
                    Some(item) => {
                        format!("it is {} (only finished items can be retried)", item.status)
                    }
                };
                return Err(CliError::Config(format!("cannot retry {id}: {why}")));
            }
        }
        InboxCommand::Retry { id: None, .. } => {
            let n = inbox::retry_failed(&pool).await?;
            println!("{n} failed item(s) pending again");
        }
    }
    pool.close().await;
    Ok(())
}

/// A plain, aligned table: readable in a terminal, greppable in a pipe.
fn table(items: &[Item]) -> String {
    let header = [
        "ID",
        "RECEIVED",
        "ACTION",
        "PK",
        "STATUS",
        "ATTEMPTS",
        "OUTCOME / LAST ERROR",
    ];
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            let note = i
                .outcome
                .clone()
                .or_else(|| i.last_error.clone())
                .unwrap_or_default();
            [
                i.id.to_string(),
                i.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                i.action.clone(),
                i.subject().to_string(),
                i.status.clone(),
                i.attempts.to_string(),
                note.chars().take(80).collect(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(no items)\n");
    }
    out
}
