//! The domain of idsync: one aggregate, `User`, keyed by Authentik's integer `pk`.
//!
//! Everything Authentik tells us arrives as one of two commands: "here is the user as
//! Authentik has it now" (a snapshot) or "this user is gone". The aggregate decides which
//! events, if any, that means. Keeping the rules here, free of I/O, is what lets the sync
//! worker and reconcile share them and lets `TestFramework` check them exhaustively.

mod metadata;
mod user;

pub use metadata::{EventMetadata, Source};
pub use user::{
    EventKind, PERSONAL_FIELDS, User, UserChanges, UserCommand, UserDeleted, UserErased, UserError,
    UserEvent, UserFields, UserFieldsMut, UserSnapshot,
};
