//! `POST /authentik/webhook`'s body parser: any bytes get an answer, and an accepted
//! user notice always names a positive pk.
#![no_main]

use idsync_authentik::webhook::{self, Parsed, Subject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Notice(notice)) = webhook::parse(data)
        && let Subject::User(pk) = notice.subject
    {
        assert!(pk > 0, "accepted pk {pk}");
    }
});
