//! What the edge checks and changes in a received message before committing it:
//! the header section's size, bare CR/LF (the documented policy against SMTP
//! smuggling), exactly one From (and at most one Sender), the header recipients,
//! and the From header under the device's sender policy.

use mail_parser::{HeaderName, MessageParser};
use mailbridge_core::header_fields::is_field;

/// Length of the header section including the blank line that ends it, or the
/// whole message if it has no body.
pub fn header_section_len(message: &[u8]) -> usize {
    memchr::memmem::find(message, b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(message.len())
}

/// Whether the message holds a CR not followed by LF, or an LF not preceded by CR.
pub fn has_bare_newline(message: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', message).any(|i| match message[i] {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        _ => i == 0 || message[i - 1] != b'\r',
    })
}

/// Turns every bare CR and bare LF into CRLF.
pub fn normalize_newlines(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// How many `name` fields the header section holds: the larger of what the parser
/// reads and what a raw scan finds (which also counts spellings the parser might
/// fold into another field), so that no reading sees a field the other missed.
pub fn field_count(message: &[u8], name: &'static str) -> usize {
    let head = &message[..header_section_len(message)];
    let raw = head
        .split(|&b| b == b'\n')
        .filter(|line| is_field(line, name))
        .count();
    let parsed = MessageParser::default()
        .parse_headers(head)
        .map(|p| p.header_values(name).count())
        .unwrap_or(0);
    raw.max(parsed)
}

/// The addresses of every To and Cc field, lower-cased, each once: those Microsoft
/// Graph delivers to besides the envelope's.
pub fn header_recipients(message: &[u8]) -> Vec<String> {
    let head = &message[..header_section_len(message)];
    let Some(parsed) = MessageParser::default().parse_headers(head) else {
        return Vec::new();
    };
    let mut addresses: Vec<String> = parsed
        .header_values(HeaderName::To)
        .chain(parsed.header_values(HeaderName::Cc))
        .filter_map(|value| value.as_address())
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address().map(str::to_ascii_lowercase))
        .collect();
    let mut seen = std::collections::HashSet::new();
    addresses.retain(|a| seen.insert(a.clone()));
    addresses
}

/// The addresses in the From header(s), lower-cased.
pub fn from_addresses(message: &[u8]) -> Vec<String> {
    MessageParser::default()
        .parse_headers(&message[..header_section_len(message)])
        .and_then(|parsed| {
            parsed.from().map(|from| {
                from.iter()
                    .filter_map(|a| a.address().map(str::to_ascii_lowercase))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The Subject, decoded and bounded, for the message log.
pub fn subject(message: &[u8]) -> Option<String> {
    MessageParser::default()
        .parse_headers(&message[..header_section_len(message)])
        .and_then(|parsed| {
            parsed
                .subject()
                .map(|s| s.chars().filter(|c| !c.is_control()).take(300).collect())
        })
}

/// A display name fit to be written back between quotes: no quotes, backslashes or
/// control characters; none if nothing is left.
fn display_name_of(address: &mail_parser::Addr<'_>) -> Option<String> {
    address
        .name()
        .map(|name| {
            name.chars()
                .filter(|c| !c.is_control() && !matches!(c, '"' | '\\'))
                .collect::<String>()
        })
        .filter(|name| !name.trim().is_empty())
}

/// Replaces the From header with `new_from` (display name kept where there was one)
/// and, unless the message has a Reply-To, points Reply-To at the original sender.
/// `start` skips our own trace header.
pub fn rewrite_from(message: &[u8], start: usize, new_from: &str) -> Vec<u8> {
    let (trace, rest) = message.split_at(start);
    let header_len = header_section_len(rest);
    let (head, body) = rest.split_at(header_len);
    let parsed = MessageParser::default().parse_headers(head);
    let display_name = parsed
        .as_ref()
        .and_then(|p| p.from())
        .and_then(|f| f.first())
        .and_then(display_name_of);
    let has_reply_to = parsed.as_ref().is_some_and(|p| p.reply_to().is_some());

    // Where the parser read a From field, however the line spelled it: those lines
    // go too, so that no reading finds a From the rewrite left behind.
    let parsed_from: Vec<(usize, usize)> = parsed
        .as_ref()
        .map(|p| {
            p.headers()
                .iter()
                .filter(|h| h.name == HeaderName::From)
                .map(|h| {
                    (
                        h.offset_field as usize,
                        (h.offset_end as usize).max(h.offset_field as usize + 1),
                    )
                })
                .collect()
        })
        .unwrap_or_default();

    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(trace);
    let mut in_from = false;
    let mut offset = 0;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let (line_start, line_end) = (offset, offset + line.len());
        offset = line_end;
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        let read_as_from = parsed_from
            .iter()
            .any(|&(from, to)| from < line_end && line_start < to);
        if !continuation || read_as_from {
            in_from = is_field(line, "from") || read_as_from;
        }
        if !in_from && line != b"\r\n" {
            out.extend_from_slice(line);
        }
    }
    // A header section that ended without a line break (a BDAT chunk can) must not
    // swallow the new field into its last line.
    if out.len() > trace.len() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    match display_name {
        Some(name) => {
            out.extend_from_slice(format!("From: \"{name}\" <{new_from}>\r\n").as_bytes())
        }
        None => out.extend_from_slice(format!("From: <{new_from}>\r\n").as_bytes()),
    }
    // Replies go to whoever the device sent for: the From as the parser read it,
    // written anew (never the raw text, which could carry more lines).
    let original = parsed
        .as_ref()
        .and_then(|p| p.from())
        .and_then(|f| f.first())
        .and_then(|a| {
            let address = a.address()?;
            let plain = !address.is_empty()
                && address
                    .chars()
                    .all(|c| !c.is_control() && !matches!(c, '<' | '>' | '"' | ',' | ' '));
            plain.then(|| match display_name_of(a) {
                Some(name) => format!("\"{name}\" <{address}>"),
                None => address.to_owned(),
            })
        });
    if let Some(original) = original.filter(|_| !has_reply_to) {
        out.extend_from_slice(b"Reply-To: ");
        out.extend_from_slice(original.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_newlines_are_found_and_normalized() {
        assert!(!has_bare_newline(b"a\r\nb\r\n"));
        assert!(has_bare_newline(b"a\nb\r\n"));
        assert!(has_bare_newline(b"a\r\nb\r"));
        assert!(has_bare_newline(b"\nb"));
        assert_eq!(normalize_newlines(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(
            normalize_newlines(b"x\n.\nMAIL FROM"),
            b"x\r\n.\r\nMAIL FROM"
        );
    }

    #[test]
    fn from_is_rewritten_and_the_original_kept_as_reply_to() {
        let trace = b"Received: by relay\r\n";
        let message = b"Received: by relay\r\nFrom: \"Scanner 3.OG\" <scan@printer.local>\r\nSubject: Scan\r\n\r\nbody\r\n";
        let out = rewrite_from(message, trace.len(), "praxis@kuehn.example");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: by relay\r\nSubject: Scan\r\nFrom: \"Scanner 3.OG\" <praxis@kuehn.example>\r\nReply-To: \"Scanner 3.OG\" <scan@printer.local>\r\n\r\nbody\r\n"
        );
        let with_reply_to = b"From: a@x.example\r\n (comment)\r\nReply-To: b@x.example\r\n\r\nbody";
        let out = String::from_utf8(rewrite_from(with_reply_to, 0, "p@k.example")).unwrap();
        // A comment after the address is all the display name there is.
        assert_eq!(
            out,
            "Reply-To: b@x.example\r\nFrom: \"comment\" <p@k.example>\r\n\r\nbody"
        );
        let bare = String::from_utf8(rewrite_from(
            b"From: a@x.example\r\n\r\nbody",
            0,
            "p@k.example",
        ))
        .unwrap();
        assert_eq!(
            bare,
            "From: <p@k.example>\r\nReply-To: a@x.example\r\n\r\nbody"
        );
        assert_eq!(
            from_addresses(b"From: A <A@X.example>\r\n\r\n"),
            vec!["a@x.example"]
        );
    }

    #[test]
    fn every_spelling_of_from_is_counted_and_rewritten() {
        // Found by fuzzing: mail-parser reads white space inside a field name away.
        let spaced = b"Fr om: ceo@x.example\r\nSubject: s\r\n\r\nbody";
        assert_eq!(field_count(spaced, "from"), 1);
        let out = rewrite_from(spaced, 0, "p@k.example");
        assert_eq!(
            field_count(&out, "from"),
            1,
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(!String::from_utf8_lossy(&out).contains("Fr om:"));
        // A header section without a final line break (a last BDAT chunk).
        let out = rewrite_from(b"X-Scan: 1", 0, "p@k.example");
        assert_eq!(out, b"X-Scan: 1\r\nFrom: <p@k.example>\r\n\r\n");
        // The original From goes to Reply-To written anew, never as raw lines.
        let two_lines = b"From: a@x.example,\r\n b@x.example\r\n\r\nbody";
        let out = String::from_utf8(rewrite_from(two_lines, 0, "p@k.example")).unwrap();
        assert_eq!(
            out,
            "From: <p@k.example>\r\nReply-To: a@x.example\r\n\r\nbody"
        );
    }
}
