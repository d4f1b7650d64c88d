//! Black-box tests: the real `idsync` binary, started on a free port against its own
//! database, driven over HTTP and signals as a user would. One test binary, many modules.

mod api;
mod blueprints;
mod checks;
mod feeds;
mod freshness;
mod groups;
mod health;
mod helpers;
mod hostile;
mod in_process;
mod intake;
mod migrate;
mod privacy;
mod projections;
mod reconcile;
mod startup;
mod subjects;
mod sync;
mod tracing;
