//! The strict Python-literal reader behind Authentik's default webhook body: any text
//! gets a value or an error, never a panic; a value it gives serialises as JSON.
//!
//! (Not checked: that the JSON reads back equal. serde_json's default float reader may
//! be one unit in the last place off, which this target found at once; idsync reads
//! only strings and integers from the context, and this reader parses floats exactly.)
#![no_main]

use idsync_authentik::webhook::python_literal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(value) = python_literal::parse(text)
    {
        serde_json::to_string(&value).expect("serialises");
    }
});
