//! Header field names as lenient parsers read them, for the few places that look at
//! raw header lines (counting From fields at the edge, removing Bcc before Graph):
//! case-insensitive, and with white space anywhere in the name ignored — the obsolete
//! syntax allows it before the colon (`From :`), and mail-parser drops it inside the
//! name too (`Fr om:` is its From) — so that no spelling a parser accepts is missed.

/// The name of the header field `line` starts; `None` for a continuation line or a
/// line without a colon.
pub fn field_name(line: &[u8]) -> Option<&[u8]> {
    if line.first().is_none_or(|b| *b == b' ' || *b == b'\t') {
        return None;
    }
    let colon = line.iter().position(|&b| b == b':')?;
    Some(line[..colon].trim_ascii_end())
}

/// Whether `line` starts a field called `name` (white space in the name ignored).
pub fn is_field(line: &[u8], name: &str) -> bool {
    field_name(line).is_some_and(|n| {
        let mut letters = n.iter().filter(|b| !b.is_ascii_whitespace());
        let mut wanted = name.as_bytes().iter();
        loop {
            match (letters.next(), wanted.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => {}
                _ => return false,
            }
        }
    })
}

/// The header section `head` without its `name` fields (continuation lines included).
pub fn without_field(head: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut dropping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            dropping = is_field(line, name);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_space_before_the_colon_and_any_case() {
        assert!(is_field(b"From: a@x.example\r\n", "from"));
        assert!(is_field(b"FROM \t: a@x.example\r\n", "from"));
        assert!(
            is_field(b"Fr om: a@x.example\r\n", "from"),
            "as mail-parser reads it"
        );
        assert!(!is_field(b" from: folded\r\n", "from"));
        assert!(!is_field(b"From-X: a\r\n", "from"));
        assert!(!is_field(b"no colon\r\n", "from"));
    }

    #[test]
    fn a_field_is_removed_with_its_continuation_lines() {
        let head = b"To: a@x.example\r\nBcc: b@x.example,\r\n c@x.example\r\nbcc : d@x.example\r\nSubject: s\r\n\r\n";
        assert_eq!(
            without_field(head, "bcc"),
            b"To: a@x.example\r\nSubject: s\r\n\r\n"
        );
    }
}
