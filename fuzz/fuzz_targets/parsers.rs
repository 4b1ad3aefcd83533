//! The edge's pure parsers on arbitrary bytes: PROXY protocol headers, and the message
//! checks and rewrites applied before a commit. None may panic; normalising newlines
//! must leave no bare CR or LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailbridge_edge::{message, proxy};

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
});
