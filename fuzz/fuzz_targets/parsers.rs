//! The edge's pure parsers on arbitrary bytes: PROXY protocol headers, command paths
//! without brackets, and the message checks and rewrites applied before a commit.
//! None may panic; normalising newlines must leave no bare CR or LF; a bracketed
//! path is the line with only the brackets added.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailbridge_edge::{bracketed_path, message, proxy};

fuzz_target!(|data: &[u8]| {
    if let Ok(proxy::Parsed::Header { len, .. }) = proxy::parse(data) {
        assert!(len <= data.len());
    }
    let normalized = message::normalize_newlines(data);
    assert!(!message::has_bare_newline(&normalized));
    let _ = message::header_section_len(data);
    let _ = message::from_addresses(data);
    let _ = message::subject(data);
    let start = data.first().map(|b| usize::from(*b) % (data.len() + 1)).unwrap_or(0);
    let _ = message::rewrite_from(data, start, "sender@praxis.example");
    let _ = message::header_recipients(data);
    let _ = message::field_count(data, "sender");
    if let Some(line) = bracketed_path(data) {
        assert_eq!(line.iter().filter(|b| **b == b'<').count(), data.iter().filter(|b| **b == b'<').count() + 1);
        assert!(line.len() <= data.len() + 2);
    }
    // What the edge commits under `rewrite` is checked once more for exactly one
    // From (data.rs refuses anything else); here: the rewrite of any header, however
    // its fields are spelled, does not panic.
    let _ = message::field_count(&message::rewrite_from(&normalized, 0, "sender@praxis.example"), "from");
});
