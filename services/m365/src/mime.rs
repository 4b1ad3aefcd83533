//! Preparing a queued message for Graph's MIME `sendMail`, which takes its
//! recipients from the header fields, not from an SMTP envelope. The envelope is the
//! one list of recipients (the edge adds To and Cc to it): every `Bcc` field of the
//! message is removed, and the envelope recipients that To and Cc do not name are
//! added as one `Bcc` (Exchange removes Bcc before the message goes on), so Graph
//! sends to exactly the envelope.

use std::borrow::Cow;

use mail_parser::{HeaderName, MessageParser};
use mailbridge_core::header_fields;

pub fn with_envelope_recipients<'a>(mime: &'a [u8], envelope: &[String]) -> Cow<'a, [u8]> {
    let header_len = mime
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(mime.len(), |p| p + 4);
    let (head, body) = mime.split_at(header_len);
    let parsed = MessageParser::default().parse_headers(head);
    let named: Vec<String> = parsed
        .as_ref()
        .map(|m| {
            m.header_values(HeaderName::To)
                .chain(m.header_values(HeaderName::Cc))
                .filter_map(|v| v.as_address())
                .flat_map(|a| a.iter())
                .filter_map(|x| x.address().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    let has_bcc = head
        .split(|&b| b == b'\n')
        .any(|line| header_fields::is_field(line, "bcc"));
    let missing: Vec<&str> = envelope
        .iter()
        .filter(|r| !named.contains(&r.to_ascii_lowercase()))
        .map(String::as_str)
        .collect();
    if missing.is_empty() && !has_bcc {
        return Cow::Borrowed(mime);
    }
    let mut out = Vec::with_capacity(mime.len() + 64);
    if !missing.is_empty() {
        out.extend_from_slice(b"Bcc: ");
        out.extend_from_slice(missing.join(",\r\n ").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&header_fields::without_field(head, "bcc"));
    out.extend_from_slice(body);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::with_envelope_recipients;

    #[test]
    fn envelope_only_recipients_become_bcc() {
        let mime = b"From: a@x.example\r\nTo: B@x.example\r\n\r\nhi\r\n";
        let envelope = vec!["b@x.example".to_owned(), "c@x.example".to_owned()];
        let out = with_envelope_recipients(mime, &envelope);
        assert_eq!(
            &out[..],
            b"Bcc: c@x.example\r\nFrom: a@x.example\r\nTo: B@x.example\r\n\r\nhi\r\n"
        );
        let all_named = with_envelope_recipients(mime, &envelope[..1]);
        assert_eq!(&all_named[..], &mime[..]);
    }

    #[test]
    fn bcc_of_the_message_is_removed_and_only_the_envelope_remains() {
        let mime = b"From: a@x.example\r\nTo: b@x.example\r\nBcc: many1@x.example,\r\n many2@x.example\r\nbcc : many3@x.example\r\n\r\nhi\r\n";
        let envelope = vec!["b@x.example".to_owned()];
        assert_eq!(
            &with_envelope_recipients(mime, &envelope)[..],
            b"From: a@x.example\r\nTo: b@x.example\r\n\r\nhi\r\n"
        );
        let envelope = vec!["b@x.example".to_owned(), "many2@x.example".to_owned()];
        assert_eq!(
            &with_envelope_recipients(mime, &envelope)[..],
            b"Bcc: many2@x.example\r\nFrom: a@x.example\r\nTo: b@x.example\r\n\r\nhi\r\n"
        );
    }
}
