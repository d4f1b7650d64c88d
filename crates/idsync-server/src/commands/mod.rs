//! What each subcommand does.

pub mod migrate;
pub mod serve;
