//! Preparing a queued message for Graph's MIME `sendMail`, which takes its
//! recipients from the header fields, not from an SMTP envelope: envelope
//! recipients the headers do not name are added as `Bcc` (Exchange removes Bcc
//! before the message goes on), so nobody the device addressed is dropped.

use std::borrow::Cow;

use mail_parser::{Address, MessageParser};

pub fn with_envelope_recipients<'a>(mime: &'a [u8], envelope: &[String]) -> Cow<'a, [u8]> {
    let named: Vec<String> = MessageParser::default()
        .parse_headers(mime)
        .map(|m| {
            let addresses = |a: Option<&Address>| -> Vec<String> {
                a.map(|a| {
                    a.iter()
                        .filter_map(|x| x.address().map(str::to_ascii_lowercase))
                        .collect()
                })
                .unwrap_or_default()
            };
            [addresses(m.to()), addresses(m.cc()), addresses(m.bcc())].concat()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = envelope
        .iter()
        .filter(|r| !named.contains(&r.to_ascii_lowercase()))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Cow::Borrowed(mime);
    }
    let mut out = Vec::with_capacity(mime.len() + 64);
    out.extend_from_slice(b"Bcc: ");
    out.extend_from_slice(missing.join(",\r\n ").as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(mime);
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
}
