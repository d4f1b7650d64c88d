//! Authentik as idsync meets it: the webhook bodies its notification transport sends
//! (`webhook`) and its users API (`client`, `model`).

pub mod client;
pub mod model;
pub mod webhook;

pub use client::{AuthentikClient, ClientConfig, ClientError};
pub use model::{AuthentikGroup, AuthentikUser, SelfUser, UserPage};
