//! SMTP replies: a code, an RFC 3463 enhanced status code, and text. Replies are
//! buffered and written when the client's pipelined input has been consumed.

/// One reply line (or the last line of a multi-line reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: &'static str,
}

macro_rules! replies {
    ($($name:ident = $code:literal $enhanced:literal $text:literal;)*) => {
        $(pub const $name: Reply = Reply { code: $code, enhanced: $enhanced, text: $text };)*
    };
}

replies! {
    OK = 250 "2.0.0" "OK";
    SENDER_OK = 250 "2.1.0" "Sender OK";
    RECIPIENT_OK = 250 "2.1.5" "Recipient OK";
    BYE = 221 "2.0.0" "Bye";
    READY_FOR_TLS = 220 "2.0.0" "Ready to start TLS";
    AUTH_OK = 235 "2.7.0" "Authentication successful";
    VRFY_CANNOT = 252 "2.5.0" "Cannot VRFY user, but will accept message and attempt delivery";
    HELP = 214 "2.0.0" "See https://www.rfc-editor.org/rfc/rfc5321";
    START_DATA = 354 "" "Start mail input; end with <CRLF>.<CRLF>";
    UNRECOGNISED = 500 "5.5.2" "Syntax error, command unrecognized";
    LINE_TOO_LONG = 500 "5.5.6" "Line too long";
    NOT_IMPLEMENTED = 502 "5.5.1" "Command not implemented";
    HELO_FIRST = 503 "5.5.1" "Send HELO/EHLO first";
    NESTED_MAIL = 503 "5.5.1" "Sender already specified";
    NEED_MAIL = 503 "5.5.1" "Need MAIL command";
    NEED_RCPT = 503 "5.5.1" "Need RCPT command";
    ALREADY_AUTHENTICATED = 503 "5.5.1" "Already authenticated";
    AUTH_IN_TRANSACTION = 503 "5.5.1" "AUTH not allowed during a mail transaction";
    TLS_ALREADY_ACTIVE = 503 "5.5.1" "TLS already active";
    HELO_SYNTAX = 501 "5.5.4" "Syntax: EHLO hostname";
    BAD_BASE64 = 501 "5.5.2" "Invalid base64 data";
    AUTH_CANCELLED = 501 "5.7.0" "Authentication cancelled";
    UNKNOWN_MECHANISM = 504 "5.5.4" "Unrecognized authentication type";
    AUTH_REQUIRED = 530 "5.7.0" "Authentication required";
    ENCRYPTION_REQUIRED = 538 "5.7.11" "Encryption required for requested authentication mechanism";
    BAD_CREDENTIALS = 535 "5.7.8" "Authentication credentials invalid";
    AUTH_UNAVAILABLE = 454 "4.7.0" "Temporary authentication failure, try again later";
    TOO_MANY_RECIPIENTS = 452 "4.5.3" "Too many recipients";
    TOO_BIG = 552 "5.3.4" "Message size exceeds fixed maximum message size";
    NOT_QUEUED = 451 "4.3.0" "Temporary failure, message not accepted; try again later";
    TIMEOUT = 421 "4.4.2" "Idle timeout, closing connection";
    SESSION_TOO_LONG = 421 "4.4.2" "Connection time limit exceeded, closing connection";
    TOO_MANY_ERRORS = 421 "4.7.0" "Too many errors, closing connection";
    TOO_MANY_MESSAGES = 421 "4.7.0" "Too many messages in this session, please reconnect";
    SHUTTING_DOWN = 421 "4.3.2" "Service shutting down, try again later";
    AUTH_LOCKED = 454 "4.7.0" "Too many failed authentication attempts, try again later";
    DEVICE_RATE_LIMITED = 450 "4.7.1" "Message rate limit of this device exceeded, try again later";
    TENANT_RATE_LIMITED = 450 "4.7.1" "Message rate limit of this customer exceeded, try again later";
    RELAY_DENIED = 550 "5.7.1" "Relaying denied: authenticate, or send from an address allow-listed for a device";
    SENDER_NOT_ALLOWED = 550 "5.7.1" "Sender address not allowed for this device";
    FROM_NOT_ONE = 550 "5.6.0" "Message must have exactly one From header field";
    SENDER_NOT_ONE = 550 "5.6.0" "Message must not have more than one Sender header field";
    TOO_MANY_HEADER_RECIPIENTS = 550 "5.5.3" "Too many recipients: To and Cc name more addresses than a message may have";
    HEADER_TOO_BIG = 552 "5.3.4" "Message header section too large";
    BARE_NEWLINE = 550 "5.6.0" "Message contains a bare CR or LF; lines must end with CRLF";
    NOT_LEGACY_DEVICE = 530 "5.7.0" "This device is not allowed legacy TLS: use the normal submission port, or allow legacy TLS for it";
    BDAT_AFTER_DATA = 503 "5.5.1" "BDAT and DATA cannot be mixed in one transaction";
}

/// Appends `reply` to `out`; `detail` (e.g. a queue id) goes after the text.
pub fn write(out: &mut Vec<u8>, reply: Reply, detail: Option<&str>) {
    use std::io::Write;
    let _ = write!(out, "{}", reply.code);
    if !reply.enhanced.is_empty() {
        let _ = write!(out, " {}", reply.enhanced);
    }
    let _ = write!(out, " {}", reply.text);
    if let Some(detail) = detail {
        let _ = write!(out, " {detail}");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a reply whose text is only known at run time.
pub fn write_text(out: &mut Vec<u8>, code: u16, enhanced: &str, text: &str) {
    use std::io::Write;
    let _ = write!(out, "{code} {enhanced} {text}\r\n");
}
