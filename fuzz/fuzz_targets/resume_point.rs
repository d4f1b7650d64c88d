//! Where an SSE stream resumes (`Last-Event-ID`, `after`): any header bytes and any
//! `after` get a start or a 400, and a start is never before the log's beginning.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Option<Vec<u8>>, Option<i64>)| {
    let (last_event_id, after) = input;
    if let Ok(Some(position)) =
        idsync_server::fuzzing::resume_point(last_event_id.as_deref(), after)
    {
        assert!(position >= 0, "resumes after {position}");
        if let Some(after) = after {
            assert!(after >= 0, "accepted after={after}");
        }
    }
});
