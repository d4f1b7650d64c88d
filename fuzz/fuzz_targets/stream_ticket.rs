//! `?ticket=`: any text is checked without a panic, and what passes is exactly the
//! base64url of 32 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|ticket: &str| {
    if idsync_server::fuzzing::ticket_well_formed(ticket) {
        assert_eq!(ticket.len(), 43);
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
});
