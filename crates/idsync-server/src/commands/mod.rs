//! What each subcommand does.

pub mod check;
pub mod healthcheck;
pub mod inbox;
pub mod migrate;
pub mod privacy;
pub mod reconcile;
pub mod replay;
pub mod serve;
