//! The `idsync` binary's library, in the order data flows: `intake` (webhook → inbox),
//! `sync` (inbox → Authentik → events), the HTTP edge (`http`), and around them the
//! configuration and CLI (`cli`), what each subcommand does (`commands`), `metrics`,
//! and process plumbing (`telemetry`, `shutdown`).

pub(crate) mod api;
pub(crate) mod auth;
pub mod cli;
pub mod commands;
mod error;
pub(crate) mod feeds;
pub(crate) mod http;
pub(crate) mod intake;
pub(crate) mod metrics;
pub(crate) mod readiness;
pub mod reconcile;
pub(crate) mod shutdown;
pub(crate) mod state;
pub(crate) mod sync;
pub mod telemetry;

pub use error::{ApiError, CliError};
