//! The Message-ID every message mailbridge hands to Microsoft carries: read from the
//! header section (the device's own), or made up from the queue id when the device
//! sent none. A non-delivery report quotes it among the original headers, which is
//! how a bounce finds the message it is about.

use crate::ids::MessageId;

use crate::header_fields::is_field;

/// The longest Message-ID kept (a header line is at most 998 octets).
const MAX_LEN: usize = 998;

/// The end of the header section: the offset after the blank line, or the length.
fn header_end(message: &[u8]) -> usize {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(message.len())
}

/// The first Message-ID field of `message`'s header section, without the angle
/// brackets and unfolded; `None` when there is none or it is empty.
pub fn find(message: &[u8]) -> Option<String> {
    let head = &message[..header_end(message)];
    let mut value: Option<Vec<u8>> = None;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        match (&mut value, continuation) {
            (Some(v), true) => v.extend_from_slice(line),
            (Some(_), false) => break,
            (None, false) if is_field(line, "message-id") => {
                let colon = line.iter().position(|&b| b == b':')?;
                value = Some(line[colon + 1..].to_vec());
            }
            _ => {}
        }
    }
    normalize(&String::from_utf8_lossy(&value?))
}

/// A Message-ID as compared: white space removed, without angle brackets.
pub fn normalize(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bare = compact
        .strip_prefix('<')
        .and_then(|c| c.split('>').next())
        .unwrap_or(&compact);
    (!bare.is_empty() && bare.len() <= MAX_LEN).then(|| bare.to_owned())
}

/// The Message-ID mailbridge gives a message without one: unique (the queue id) and
/// under the relay's host name.
pub fn generated(queue_id: MessageId, hostname: &str) -> String {
    format!("{}@{}", queue_id.simple(), hostname)
}

/// `message` with a Message-ID field inserted at `at` (after the trace fields the
/// relay added), if it has none; and the Message-ID it carries either way.
pub fn ensure(
    message: Vec<u8>,
    at: usize,
    queue_id: MessageId,
    hostname: &str,
) -> (Vec<u8>, String) {
    if let Some(existing) = find(&message) {
        return (message, existing);
    }
    let id = generated(queue_id, hostname);
    let field = format!("Message-ID: <{id}>\r\n");
    let at = at.min(message.len());
    let mut out = Vec::with_capacity(message.len() + field.len());
    out.extend_from_slice(&message[..at]);
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&message[at..]);
    (out, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devices_message_id_is_read_unfolded_and_bare() {
        let m = b"From: a@x.example\r\nMessage-Id:\r\n <abc.123@scanner.local>\r\nSubject: x\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(find(m).as_deref(), Some("abc.123@scanner.local"));
        assert_eq!(find(b"From: a@x\r\n\r\nMessage-ID: <body@x>\r\n"), None);
        assert_eq!(find(b"Message-ID:   \r\n\r\n"), None);
    }

    #[test]
    fn a_message_without_one_gets_one_after_the_trace() {
        let id = MessageId::from(uuid::Uuid::nil());
        let (out, mid) = ensure(
            b"Received: by relay\r\nFrom: a@x\r\n\r\nbody\r\n".to_vec(),
            20,
            id,
            "relay.example",
        );
        assert_eq!(mid, format!("{}@relay.example", id.simple()));
        assert_eq!(
            out,
            format!("Received: by relay\r\nMessage-ID: <{mid}>\r\nFrom: a@x\r\n\r\nbody\r\n")
                .into_bytes()
        );
        let kept = b"Received: by relay\r\nMessage-ID: <own@dev>\r\n\r\n".to_vec();
        assert_eq!(
            ensure(kept.clone(), 20, id, "r"),
            (kept, "own@dev".to_owned())
        );
    }
}
