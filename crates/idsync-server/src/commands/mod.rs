//! What each subcommand does.

pub mod inbox;
pub mod migrate;
pub mod serve;
