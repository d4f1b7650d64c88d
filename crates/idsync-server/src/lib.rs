//! The `idsync` binary's library, in the order data flows: `intake` (webhook → inbox),
//! `sync` (inbox → Authentik → events), the HTTP edge (`http`), and around them the
//! configuration and CLI (`cli`), what each subcommand does (`commands`), `metrics`,
//! and process plumbing (`telemetry`, `shutdown`).

pub mod api;
pub mod auth;
pub mod cli;
pub mod commands;
mod error;
pub mod feeds;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod readiness;
pub mod reconcile;
pub mod shutdown;
pub mod state;
pub mod sync;
pub mod telemetry;

pub use error::{ApiError, CliError};
