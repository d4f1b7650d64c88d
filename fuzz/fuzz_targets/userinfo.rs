//! A trusted gateway's `X-Userinfo` (base64 JSON): any header text gets a subject or
//! nothing, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = idsync_server::fuzzing::userinfo(text);
    }
});
