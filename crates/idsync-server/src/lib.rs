//! The `idsync` binary's library: configuration and CLI (`cli`), the HTTP edge (`http`),
//! what each subcommand does (`commands`), and process plumbing (`telemetry`, `shutdown`).

pub mod cli;
pub mod commands;
mod error;
pub mod http;
pub mod shutdown;
pub mod telemetry;

pub use error::{ApiError, CliError};
