//! A user's JSON written straight from the row Postgres sent, for pages of users: the
//! same members, in the same order, with the same values and formats as serde writes
//! for a [`UserRow`](super::users::UserRow) (tests compare the two), without building
//! the row's owned strings and vectors first. On a page of a hundred users that
//! decoding, not Postgres, was most of the cost (`docs/performance.md`).

use std::io::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::StoreError;

/// Writes the user in `row` (columns in `users::COLUMNS` order) as a JSON object;
/// returns its pk.
pub(crate) fn write_user(out: &mut Vec<u8>, row: &PgRow) -> Result<i64, StoreError> {
    let pk: i64 = row.try_get(0)?;
    let uuid: Uuid = row.try_get(1)?;
    let username: &str = row.try_get(2)?;
    let email: &str = row.try_get(3)?;
    let name: &str = row.try_get(4)?;
    let is_active: bool = row.try_get(5)?;
    let user_type: &str = row.try_get(6)?;
    // Arrays decode into owned strings only (a few per user).
    let groups: Vec<String> = row.try_get(7)?;
    let registered_at: DateTime<Utc> = row.try_get(8)?;
    let updated_at: DateTime<Utc> = row.try_get(9)?;
    let deleted_at: Option<DateTime<Utc>> = row.try_get(10)?;
    let uid: Option<&str> = row.try_get(11)?;
    let erased: bool = row.try_get(13)?;
    let personal = |out: &mut Vec<u8>, text: &str| {
        if erased {
            out.extend_from_slice(b"null");
        } else {
            string(out, text);
        }
    };

    out.extend_from_slice(b"{\"pk\":");
    out.extend_from_slice(itoa::Buffer::new().format(pk).as_bytes());
    out.extend_from_slice(b",\"uuid\":\"");
    out.extend_from_slice(
        uuid.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"username\":");
    personal(out, username);
    out.extend_from_slice(b",\"email\":");
    personal(out, email);
    out.extend_from_slice(b",\"name\":");
    personal(out, name);
    out.extend_from_slice(if is_active {
        b",\"is_active\":true,\"type\":"
    } else {
        b",\"is_active\":false,\"type\":"
    });
    string(out, user_type);
    out.extend_from_slice(b",\"groups\":[");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, group);
    }
    out.extend_from_slice(b"],\"registered_at\":");
    timestamp(out, registered_at);
    out.extend_from_slice(b",\"updated_at\":");
    timestamp(out, updated_at);
    out.extend_from_slice(b",\"deleted_at\":");
    match deleted_at {
        Some(at) => timestamp(out, at),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"uid\":");
    match uid {
        Some(uid) if !erased => string(out, uid),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if erased {
        b",\"erased\":true}"
    } else {
        b",\"erased\":false}"
    });
    Ok(pk)
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `"2026-11-23T16:51:20.725082Z"`: RFC 3339 in UTC as chrono's serde writes it, with as
/// many fraction digits as needed (none, 3, 6 or 9).
fn timestamp(out: &mut Vec<u8>, at: DateTime<Utc>) {
    let date = at.date_naive();
    let time = at.time();
    let year = date.year();
    if !(0..=9999).contains(&year) {
        // Outside what users' timestamps hold in practice: chrono's own form.
        let _ = write!(
            out,
            "\"{}\"",
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        return;
    }
    out.push(b'"');
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, date.month(), 2);
    out.push(b'-');
    digits(out, date.day(), 2);
    out.push(b'T');
    digits(out, time.hour(), 2);
    out.push(b':');
    digits(out, time.minute(), 2);
    out.push(b':');
    let nanos = time.nanosecond();
    // A leap second is stored as 60 s with the extra second in the nanoseconds.
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (time.second() + 1, nanos - 1_000_000_000)
    } else {
        (time.second(), nanos)
    };
    digits(out, second, 2);
    if nanos == 0 {
        // whole seconds: no fraction
    } else if nanos % 1_000_000 == 0 {
        out.push(b'.');
        digits(out, nanos / 1_000_000, 3);
    } else if nanos % 1_000 == 0 {
        out.push(b'.');
        digits(out, nanos / 1_000, 6);
    } else {
        out.push(b'.');
        digits(out, nanos, 9);
    }
    out.extend_from_slice(b"Z\"");
}

/// `value` in exactly `width` decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_chrono_serialises_them() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases: Vec<DateTime<Utc>> = vec![
            DateTime::UNIX_EPOCH,
            DateTime::from_timestamp(1_700_000_000, 0).expect("t"),
            DateTime::from_timestamp(1_700_000_000, 500_000_000).expect("t"),
            DateTime::from_timestamp(1_700_000_000, 123_000).expect("t"),
            DateTime::from_timestamp(1_700_000_000, 7_000).expect("t"),
            DateTime::from_timestamp(1_700_000_000, 1).expect("t"),
            DateTime::from_timestamp(-62_135_596_800, 0).expect("year 1"),
            DateTime::from_timestamp(253_402_300_799, 999_999_000).expect("year 9999"),
        ];
        for _ in 0..2000 {
            let secs = (next() % 16_000_000_000) as i64 - 2_000_000_000;
            let micros = (next() % 1_000_000) as u32;
            let nanos = match next() % 4 {
                0 => 0,
                1 => (micros / 1000) * 1_000_000,
                _ => micros * 1000,
            };
            cases.push(DateTime::from_timestamp(secs, nanos).expect("t"));
        }
        for at in cases {
            let mut out = Vec::new();
            timestamp(&mut out, at);
            let expected = serde_json::to_string(&at).expect("serde");
            assert_eq!(String::from_utf8(out).expect("utf-8"), expected, "{at:?}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for text in [
            "plain",
            "quote \" back \\ slash",
            "tab\tnew\nline\u{1}",
            "Ünïcødé ✓",
            "",
        ] {
            let mut out = Vec::new();
            string(&mut out, text);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                serde_json::to_string(text).expect("serde")
            );
        }
    }
}
