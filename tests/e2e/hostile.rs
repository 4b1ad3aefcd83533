//! Hostile input under load. A catalogue of malformed and malicious SMTP sessions
//! (SMTP smuggling, NUL bytes, over-long lines, broken AUTH, commands out of order,
//! bad SIZE and BDAT, TLS garbage, STARTTLS command injection, slowloris, a
//! connection flood, password guessing) runs all at once while devices of three
//! customers keep sending through STARTTLS and AUTH. It proves that every hostile
//! session gets its RFC answer or is cut off; that every message the edge said `250`
//! to, hostile or not, reaches the simulated Microsoft 365 byte for byte, exactly
//! once and through its own customer's tenant, while nothing else does (no smuggled
//! message); and that the edge goes on serving with no session task panicking.

use std::{
    collections::{HashMap, HashSet},
    error::Error as _,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use lettre::{
    AsyncTransport,
    address::Envelope,
    transport::smtp::{
        authentication::Mechanism,
        client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters},
        extension::ClientId,
        response::Response,
    },
};
use mailbridge::stack::StackOptions;
use mailbridge_core::devices::{self, DeviceListener, IssuedCredential, PolicyChange};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf},
    net::{TcpSocket, TcpStream},
    task::JoinSet,
};

use crate::harness::{SmtpProbe, TestApp, TestTenant, sample_message, without_final_crlf};

const HOSTNAME: &str = "relay.mailbridge.test";
const IDLE: Duration = Duration::from_secs(2);
const SESSION: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = 1024 * 1024;
const MAX_RECIPIENTS: usize = 20;
const LOCKOUT_FAILURES: u32 = 5;
/// Longest wait for one reply or for the edge to close (above every timeout).
const WAIT: Duration = Duration::from_secs(15);
/// Between the bytes of a slowloris: well inside the idle timeout.
const DRIBBLE_PAUSE: Duration = Duration::from_millis(300);
/// Between the pieces of a line split over many reads.
const PIECE_PAUSE: Duration = Duration::from_millis(20);
/// Between the starts of the catalogue's cases.
const STAGGER: Duration = Duration::from_millis(20);

/// The listener a hostile session connects to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// 587 in clear (STARTTLS is a step).
    Submission,
    /// 465 without speaking TLS: bytes go to the TLS handshake.
    Submissions,
    /// 465 with a real TLS client; the edge's greeting and the EHLO are done.
    SubmissionsTls,
    /// 25, where devices are known by their address.
    Relay,
}

/// Where a hostile session connects from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// An address of its own inside the network allowed to AUTH without TLS.
    ClearAuth,
    /// An address of its own outside it.
    Elsewhere,
    /// The address the hostile customer's relay device is allow-listed for.
    RelayDevice,
    Fixed(Ipv4Addr),
}

const RELAY_DEVICE: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);
const GUESSER: Ipv4Addr = Ipv4Addr::new(127, 0, 4, 1);
const GUESSER_ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 4, 2);
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 5, 1);
const IDLE_FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 5, 2);
/// Networks allowed to AUTH in clear: ClearAuth origins, the guesser, the flooders.
const CLEAR_AUTH_NETWORKS: &str = "127.0.1.0/24, 127.0.4.0/24, 127.0.5.0/24";

#[derive(Clone)]
enum Step {
    /// Writes the bytes at once.
    Send(Vec<u8>),
    /// Writes the bytes in pieces of this size, `PIECE_PAUSE` apart.
    Pieces(Vec<u8>, usize),
    /// Writes one byte every `DRIBBLE_PAUSE` until the edge answers or closes.
    Dribble(Vec<u8>),
    /// Reads one reply; its first line must start with this.
    Reply(&'static str),
    /// The edge closes the connection without another SMTP reply (a TLS alert at
    /// most).
    Closed,
    /// A real TLS client does EHLO and STARTTLS, writing these bytes in the same
    /// packet as STARTTLS, then the handshake and EHLO again: the first answer inside
    /// TLS must be that EHLO's. Only as the first step.
    StartTls(&'static str),
}
use Step::{Closed, Dribble, Pieces, Reply, StartTls};

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Long inputs are shown by their start and length.
        let bytes = |f: &mut std::fmt::Formatter<'_>, what: &str, bytes: &[u8]| {
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
            write!(f, "{what}({start:?}, {} bytes)", bytes.len())
        };
        match self {
            Step::Send(b) => bytes(f, "Send", b),
            Pieces(b, size) => bytes(f, &format!("Pieces of {size}"), b),
            Dribble(b) => bytes(f, "Dribble", b),
            Reply(prefix) => write!(f, "Reply({prefix:?})"),
            Closed => f.write_str("Closed"),
            StartTls(inject) => write!(f, "StartTls({inject:?})"),
        }
    }
}

fn send(bytes: impl Into<Vec<u8>>) -> Step {
    Step::Send(bytes.into())
}

/// One entry of the catalogue: a session (or `copies` of it at once) and what must
/// come of it.
#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    listener: Listener,
    origin: Origin,
    /// Runs once this case has finished.
    after: Option<&'static str>,
    copies: usize,
    steps: Vec<Step>,
    /// The messages the edge accepts in the session, as they must arrive (after
    /// the edge's trace header), in order.
    delivers: Vec<Vec<u8>>,
}

fn case(name: &'static str, parts: impl IntoIterator<Item = Vec<Step>>) -> Case {
    Case {
        name,
        listener: Listener::Submission,
        origin: Origin::ClearAuth,
        after: None,
        copies: 1,
        steps: parts.into_iter().flatten().collect(),
        delivers: Vec::new(),
    }
}

impl Case {
    fn on(mut self, listener: Listener) -> Self {
        self.listener = listener;
        self
    }
    fn origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }
    fn after(mut self, other: &'static str) -> Self {
        self.after = Some(other);
        self
    }
    fn copies(mut self, copies: usize) -> Self {
        self.copies = copies;
        self
    }
    fn delivers(mut self, message: impl Into<Vec<u8>>) -> Self {
        self.delivers.push(message.into());
        self
    }
}

/// The hostile customer's credentials, as the catalogue uses them.
struct Ctx {
    username: String,
    password: String,
    sender: String,
    /// A device of the same customer whose password is guessed, then locked out.
    victim: String,
    victim_password: String,
}

fn plain(authzid: &str, username: &str, password: &str) -> String {
    STANDARD.encode(format!("{authzid}\0{username}\0{password}"))
}

const EHLO_OK: &str = "250 relay.mailbridge.test greets";
const QUEUED: &str = "250 2.0.0 OK queued as";
const SMUGGLED: &str = "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@attacker.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n";

fn greeting() -> Vec<Step> {
    vec![Reply("220 relay.mailbridge.test ESMTP")]
}

fn hello() -> Vec<Step> {
    [
        greeting(),
        vec![send("EHLO hostile.test\r\n"), Reply(EHLO_OK)],
    ]
    .concat()
}

fn login(c: &Ctx) -> Vec<Step> {
    let auth = format!("AUTH PLAIN {}\r\n", plain("", &c.username, &c.password));
    [hello(), vec![send(auth), Reply("235 2.7.0")]].concat()
}

fn envelope(c: &Ctx) -> Vec<Step> {
    let mail = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<inbox@hostile.example>\r\n",
        c.sender
    );
    [
        login(c),
        vec![send(mail), Reply("250 2.1.0"), Reply("250 2.1.5")],
    ]
    .concat()
}

fn data(c: &Ctx) -> Vec<Step> {
    [envelope(c), vec![send("DATA\r\n"), Reply("354 ")]].concat()
}

fn quit() -> Vec<Step> {
    vec![send("QUIT\r\n"), Reply("221 2.0.0"), Closed]
}

fn steps(steps: impl IntoIterator<Item = Step>) -> Vec<Step> {
    steps.into_iter().collect()
}

/// Bytes that are no protocol at all, the same on every run.
fn noise(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7919 % 251) as u8).collect()
}

/// The start of a TLS ClientHello record that never gets finished.
const CLIENT_HELLO_START: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a,
];

fn catalogue(c: &Ctx) -> Vec<Case> {
    let head = format!("From: {}\r\nSubject: smuggling\r\n\r\nhello", c.sender);
    // What follows "hello" as sent, and as it must arrive: never an end of data.
    let smuggling = [
        ("smuggling: <LF>.<LF>", "\n.\n", "\r\n.\r\n"),
        ("smuggling: <LF>.<CRLF>", "\n.\r\n", "\r\n.\r\n"),
        ("smuggling: <CR>.<CRLF>", "\r.\r\n", "\r\n.\r\n"),
        ("smuggling: <CR>.<CR>", "\r.\r", "\r\n.\r\n"),
        ("smuggling: <CRLF>.<LF>", "\r\n.\n", "\r\n\r\n"),
        ("smuggling: <CRLF>.<CR>", "\r\n.\r", "\r\n\r\n"),
        (
            "smuggling: <CRLF>.<CR><CRLF>",
            "\r\n.\r\r\n",
            "\r\n\r\n\r\n",
        ),
        ("smuggling: <CRLF>.<NUL><CRLF>", "\r\n.\0\r\n", "\r\n\0\r\n"),
        (
            "smuggling: <CRLF><NUL>.<CRLF>",
            "\r\n\0.\r\n",
            "\r\n\0.\r\n",
        ),
        ("smuggling: a stuffed dot line", "\r\n..\r\n", "\r\n.\r\n"),
    ];
    let mut cases: Vec<Case> = smuggling
        .into_iter()
        .map(|(name, sent, arrives)| {
            let message = format!("{head}{sent}{SMUGGLED}.\r\n");
            case(
                name,
                [data(c), steps([send(message), Reply(QUEUED)]), quit()],
            )
            .delivers(format!("{head}{arrives}{SMUGGLED}"))
        })
        .collect();
    let relay_smuggling = format!("{head}\r\n.\r\r\n{SMUGGLED}.\r\n");
    let relay_envelope = format!(
        "HELO relay.hostile.test\r\nMAIL FROM:<{}>\r\nRCPT TO:<inbox@hostile.example>\r\nDATA\r\n",
        c.sender
    );
    let nul_message = format!(
        "From: {}\r\nSubject: nul\r\n\r\nbefore\0after\r\n",
        c.sender
    );
    let long_line_message = format!(
        "From: {}\r\nSubject: long line\r\n\r\n{}\r\n",
        c.sender,
        "y".repeat(200_000)
    );
    let too_big = "z".repeat(998) + "\r\n";
    let pipelined_after_data = format!(
        "From: {}\r\nSubject: then garbage\r\n\r\nbody\r\n",
        c.sender
    );
    let mail = |parameters: &str| format!("MAIL FROM:<{}>{parameters}\r\n", c.sender);
    let auth = format!("AUTH PLAIN {}\r\n", plain("", &c.username, &c.password));
    let victim = |password: &str| format!("AUTH PLAIN {}\r\n", plain("", &c.victim, password));
    let long_line = |fill: usize, tail: &str| format!("NOOP {}{tail}\r\n", "a".repeat(fill));
    let recipients: String = (0..=MAX_RECIPIENTS)
        .map(|i| format!("RCPT TO:<r{i}@hostile.example>\r\n"))
        .collect();
    let mut too_many = vec![send(recipients)];
    too_many.extend(std::iter::repeat_n(Reply("250 2.1.5"), MAX_RECIPIENTS));
    too_many.push(Reply("452 4.5.3"));
    let mut garbage_stream = vec![send(
        "A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nG\r\nH\r\nI\r\nJ\r\nK\r\nL\r\n",
    )];
    garbage_stream.extend(std::iter::repeat_n(Reply("500 5.5.2"), 10));
    garbage_stream.extend([Reply("421 4.7.0 Too many errors"), Closed]);

    cases.extend([
        case(
            "smuggling: <CRLF>.<CR><CRLF> from a relay device",
            [
                greeting(),
                steps([
                    send(relay_envelope),
                    Reply("250 2.0.0 relay.mailbridge.test"),
                    Reply("250 2.1.0"),
                    Reply("250 2.1.5"),
                    Reply("354 "),
                    send(relay_smuggling),
                    Reply(QUEUED),
                ]),
                quit(),
            ],
        )
        .on(Listener::Relay)
        .origin(Origin::RelayDevice)
        .delivers(format!("{head}\r\n\r\n\r\n{SMUGGLED}")),
        // Message data.
        case(
            "DATA: garbage pipelined after the end of data",
            [
                data(c),
                steps([
                    send(format!("{pipelined_after_data}.\r\n\0\x01\x02garbage\r\n")),
                    Reply(QUEUED),
                    Reply("500 5.5.2"),
                ]),
                quit(),
            ],
        )
        .delivers(pipelined_after_data),
        case(
            "DATA: NUL bytes in the message",
            [
                data(c),
                steps([send(format!("{nul_message}.\r\n")), Reply(QUEUED)]),
                quit(),
            ],
        )
        .delivers(nul_message),
        case(
            "DATA: a 200 KB line",
            [
                data(c),
                steps([send(format!("{long_line_message}.\r\n")), Reply(QUEUED)]),
                quit(),
            ],
        )
        .delivers(long_line_message),
        case(
            "DATA: over the size limit, then the session goes on",
            [
                data(c),
                steps([
                    send(too_big.repeat(1500) + ".\r\n"),
                    Reply("552 5.3.4"),
                    send("NOOP\r\n"),
                    Reply("250 2.0.0"),
                ]),
                quit(),
            ],
        ),
        case(
            "DATA: a first line that starts with a dot is unstuffed",
            [
                data(c),
                steps([send("..leading dot\r\n\r\nbody\r\n.\r\n"), Reply(QUEUED)]),
                quit(),
            ],
        )
        .delivers(".leading dot\r\n\r\nbody\r\n"),
        case(
            "DATA: an empty message ends at once",
            [data(c), steps([send(".\r\n"), Reply(QUEUED)]), quit()],
        )
        .delivers(""),
        // NUL bytes in commands.
        case(
            "NUL: in EHLO",
            [
                greeting(),
                steps([
                    send("EHLO foo\0bar.example\r\n"),
                    Reply("501 5.5.4"),
                    send("EHLO ok.example\r\n"),
                    Reply(EHLO_OK),
                ]),
                quit(),
            ],
        ),
        case(
            "NUL: in HELO",
            [
                greeting(),
                steps([send("HELO foo\0bar.example\r\n"), Reply("501 5.5.4")]),
                quit(),
            ],
        ),
        case(
            "NUL: inside a command verb",
            [greeting(), steps([send("NO\0OP\r\n"), Reply("500 5.5.2")]), quit()],
        ),
        case(
            "NUL: a line of NUL bytes",
            [greeting(), steps([send("\0\0\0\0\r\n"), Reply("500 5.5.2")]), quit()],
        ),
        case(
            "NUL: in the MAIL FROM address",
            [
                login(c),
                steps([send("MAIL FROM:<a\0b@hostile.example>\r\n"), Reply("501 5.1.7")]),
                quit(),
            ],
        ),
        case(
            "NUL: after the MAIL FROM path",
            [
                login(c),
                steps([send(format!("MAIL FROM:<{}>\0\r\n", c.sender)), Reply("501 5.5.4")]),
                quit(),
            ],
        ),
        case(
            "NUL: in the RCPT TO address",
            [
                envelope(c),
                steps([send("RCPT TO:<a\0b@hostile.example>\r\n"), Reply("501 5.1.3")]),
                quit(),
            ],
        ),
        case(
            "NUL: in the AUTH PLAIN response",
            [
                hello(),
                steps([send("AUTH PLAIN AG\0Fh\r\n"), Reply("501 5.5.2")]),
                quit(),
            ],
        ),
        // Over-long command lines.
        case(
            "long line: a 1 MB command line in one write",
            [
                greeting(),
                steps([
                    send(long_line(1 << 20, "") + "NOOP\r\n"),
                    Reply("500 5.5.6"),
                    Reply("250 2.0.0"),
                ]),
                quit(),
            ],
        ),
        case(
            "long line: a 12 KB command line arriving in 1000-byte pieces",
            [
                greeting(),
                steps([
                    Pieces(long_line(12_000, "").into_bytes(), 1000),
                    Reply("500 5.5.6"),
                    send("NOOP\r\n"),
                    Reply("250 2.0.0"),
                ]),
                quit(),
            ],
        ),
        case(
            "long line: a command behind the 4096th byte of a split line",
            [
                greeting(),
                steps([
                    Pieces(long_line(4091, "HELP").into_bytes(), 3005),
                    Reply("500 5.5.6"),
                ]),
                quit(),
            ],
        ),
        case(
            "long line: an EHLO domain of 300 characters",
            [
                greeting(),
                steps([send(format!("EHLO {}\r\n", "h".repeat(300))), Reply("501 5.5.4")]),
                quit(),
            ],
        ),
        case(
            "long line: a MAIL FROM address of 300 characters",
            [
                login(c),
                steps([
                    send(format!("MAIL FROM:<{}@hostile.example>\r\n", "a".repeat(300))),
                    Reply("501 5.1.7"),
                ]),
                quit(),
            ],
        ),
        // AUTH.
        case(
            "AUTH: mechanisms the edge does not offer",
            [
                hello(),
                steps([
                    send("AUTH CRAM-MD5\r\nAUTH XOAUTH2 dXNlcj1h\r\nAUTH GSSAPI\r\nAUTH FOOBAR\r\n"),
                    Reply("504 5.5.4"),
                    Reply("504 5.5.4"),
                    Reply("504 5.5.4"),
                    Reply("504 5.5.4"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: without a mechanism",
            [hello(), steps([send("AUTH\r\n"), Reply("501 5.5.4")]), quit()],
        ),
        case(
            "AUTH: PLAIN with invalid base64",
            [
                hello(),
                steps([send("AUTH PLAIN !!not*base64\r\n"), Reply("501 5.5.2")]),
                quit(),
            ],
        ),
        case(
            "AUTH: LOGIN with an invalid base64 username",
            [
                hello(),
                steps([
                    send("AUTH LOGIN\r\n"),
                    Reply("334 VXNlcm5hbWU6"),
                    send("@@@\r\n"),
                    Reply("501 5.5.2"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: PLAIN cancelled with *",
            [
                hello(),
                steps([
                    send("AUTH PLAIN\r\n"),
                    Reply("334 "),
                    send("*\r\n"),
                    Reply("501 5.7.0"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: LOGIN cancelled at the password",
            [
                hello(),
                steps([
                    send(format!("AUTH LOGIN {}\r\n", STANDARD.encode(&c.username))),
                    Reply("334 UGFzc3dvcmQ6"),
                    send("*\r\n"),
                    Reply("501 5.7.0"),
                ]),
                quit(),
            ],
        ),
        // These three fail for the empty username, fewer times than the lockout.
        case(
            "AUTH: PLAIN without its NUL separators",
            [
                hello(),
                steps([
                    send(format!(
                        "AUTH PLAIN {}\r\n",
                        STANDARD.encode(format!("{} {}", c.username, c.password))
                    )),
                    Reply("535 5.7.8"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: PLAIN with the empty response",
            [hello(), steps([send("AUTH PLAIN =\r\n"), Reply("535 5.7.8")]), quit()],
        ),
        case(
            "AUTH: PLAIN acting for another device (authzid)",
            [
                hello(),
                steps([
                    send(format!(
                        "AUTH PLAIN {}\r\n",
                        plain(&c.victim, &c.username, &c.password)
                    )),
                    Reply("535 5.7.8"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: PLAIN with a 1 MB response",
            [
                hello(),
                steps([
                    send("AUTH PLAIN\r\n"),
                    Reply("334 "),
                    send("x".repeat(1 << 20) + "\r\n"),
                    Reply("501 5.5.2"),
                    send("NOOP\r\n"),
                    Reply("250 2.0.0"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: LOGIN with a 1 MB username",
            [
                hello(),
                steps([
                    send("AUTH LOGIN\r\n"),
                    Reply("334 VXNlcm5hbWU6"),
                    send("x".repeat(1 << 20) + "\r\n"),
                    Reply("501 5.5.2"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: PLAIN with a 20 KB initial response",
            [
                hello(),
                steps([
                    send(format!("AUTH PLAIN {}\r\n", "QUFB".repeat(5000))),
                    Reply("500 5.5.6"),
                ]),
                quit(),
            ],
        ),
        case(
            "AUTH: before EHLO",
            [greeting(), steps([send(auth.clone()), Reply("503 5.5.1")]), quit()],
        ),
        case(
            "AUTH: a second time",
            [
                login(c),
                steps([send(auth.clone()), Reply("503 5.5.1 Already authenticated")]),
                quit(),
            ],
        ),
        case(
            "AUTH: in clear from outside the allowed networks",
            [hello(), steps([send(auth.clone()), Reply("538 5.7.11")]), quit()],
        )
        .origin(Origin::Elsewhere),
        case("AUTH: guessing a password until locked out", {
            let mut guesses = vec![hello()];
            for n in 0..LOCKOUT_FAILURES {
                guesses.push(steps([
                    send(victim(&format!("guess-{n}"))),
                    Reply("535 5.7.8"),
                ]));
            }
            guesses.push(steps([
                send(victim(&c.victim_password)),
                Reply("454 4.7.0 Too many failed"),
            ]));
            guesses.push(quit());
            guesses
        })
        .origin(Origin::Fixed(GUESSER)),
        case(
            "AUTH: the locked-out username from another address",
            [
                hello(),
                steps([
                    send(victim(&c.victim_password)),
                    Reply("454 4.7.0 Too many failed"),
                ]),
                quit(),
            ],
        )
        .origin(Origin::Fixed(GUESSER_ELSEWHERE))
        .after("AUTH: guessing a password until locked out"),
        case(
            "AUTH: another device from the locked-out address",
            [
                hello(),
                steps([send(auth.clone()), Reply("454 4.7.0 Too many failed")]),
                quit(),
            ],
        )
        .origin(Origin::Fixed(GUESSER))
        .after("AUTH: guessing a password until locked out"),
        // Commands out of order.
        case(
            "order: MAIL before EHLO",
            [
                greeting(),
                steps([send(mail("")), Reply("503 5.5.1 Send HELO/EHLO first")]),
                quit(),
            ],
        ),
        case(
            "order: MAIL without AUTH",
            [hello(), steps([send(mail("")), Reply("530 5.7.0")]), quit()],
        )
        .origin(Origin::Elsewhere),
        case(
            "order: RCPT without MAIL",
            [
                login(c),
                steps([send("RCPT TO:<a@hostile.example>\r\n"), Reply("503 5.5.1 Need MAIL")]),
                quit(),
            ],
        ),
        case(
            "order: DATA without MAIL",
            [
                login(c),
                steps([send("DATA\r\n"), Reply("503 5.5.1 Need MAIL")]),
                quit(),
            ],
        ),
        case(
            "order: DATA without RCPT",
            [
                login(c),
                steps([
                    send(mail("") + "DATA\r\n"),
                    Reply("250 2.1.0"),
                    Reply("503 5.5.1 Need RCPT"),
                ]),
                quit(),
            ],
        ),
        case(
            "order: a second MAIL in a transaction",
            [
                envelope(c),
                steps([send(mail("")), Reply("503 5.5.1 Sender already specified")]),
                quit(),
            ],
        ),
        case(
            "order: one recipient too many",
            [
                login(c),
                steps([send(mail("")), Reply("250 2.1.0")]),
                too_many,
                steps([send("RSET\r\n"), Reply("250 2.0.0")]),
                quit(),
            ],
        ),
        case(
            "order: an empty recipient",
            [envelope(c), steps([send("RCPT TO:<>\r\n"), Reply("501 5.1.3")]), quit()],
        ),
        // A bare address is bracketed for old devices; anything else that lacks the
        // brackets stays a syntax error.
        case(
            "order: RCPT TO without angle brackets",
            [
                envelope(c),
                steps([send("RCPT TO:a@hostile.example\r\n"), Reply("250 2.1.5")]),
                quit(),
            ],
        ),
        case(
            "order: RCPT TO with a quoted path and no brackets",
            [
                envelope(c),
                steps([send("RCPT TO:\"a b\"@hostile.example\r\n"), Reply("501 5.5.4")]),
                quit(),
            ],
        ),
        case(
            "order: an unknown MAIL parameter",
            [login(c), steps([send(mail(" XYZZY=1")), Reply("555 5.5.4")]), quit()],
        ),
        case(
            "order: EHLO without a domain",
            [greeting(), steps([send("EHLO\r\n"), Reply("501 5.5.4")]), quit()],
        ),
        case(
            "order: LHLO on the submission port",
            [greeting(), steps([send("LHLO x.example\r\n"), Reply("500 5.5.2")]), quit()],
        ),
        case(
            "order: ETRN, ATRN and BURL",
            [
                hello(),
                steps([
                    send("ETRN hostile.example\r\nATRN hostile.example\r\nBURL imap://x/y LAST\r\n"),
                    Reply("502 5.5.1"),
                    Reply("502 5.5.1"),
                    Reply("502 5.5.1"),
                ]),
                quit(),
            ],
        ),
        case(
            "order: VRFY and EXPN probing for mailboxes",
            [
                hello(),
                steps([
                    send("VRFY scanner\r\nEXPN staff\r\n"),
                    Reply("252 2.5.0"),
                    Reply("252 2.5.0"),
                ]),
                quit(),
            ],
        ),
        // SIZE.
        case(
            "SIZE: above the limit",
            [login(c), steps([send(mail(" SIZE=2000000")), Reply("552 5.3.4")]), quit()],
        ),
        case(
            "SIZE: 20 digits",
            [
                login(c),
                steps([send(mail(" SIZE=99999999999999999999")), Reply("552 5.3.4")]),
                quit(),
            ],
        ),
        case(
            "SIZE: 24 digits",
            [
                login(c),
                steps([send(mail(" SIZE=100000000000000000000000")), Reply("552 5.3.4")]),
                quit(),
            ],
        ),
        case(
            "SIZE: not a number",
            [login(c), steps([send(mail(" SIZE=abc")), Reply("501 5.5.4")]), quit()],
        ),
        // BDAT.
        case(
            "BDAT: a chunk above the limit is read and refused",
            [
                envelope(c),
                steps([
                    send([b"BDAT 1100000 LAST\r\n".to_vec(), vec![b'b'; 1_100_000]].concat()),
                    Reply("552 5.3.4"),
                    send("NOOP\r\n"),
                    Reply("250 2.0.0"),
                ]),
                quit(),
            ],
        ),
        case(
            "BDAT: a size smaller than the data",
            [
                envelope(c),
                steps([
                    send("BDAT 5 LAST\r\nhello world\r\n"),
                    Reply(QUEUED),
                    Reply("500 5.5.2"),
                ]),
                quit(),
            ],
        )
        .delivers("hello"),
        case(
            "BDAT: a size larger than the data, then silence",
            [
                envelope(c),
                steps([
                    send("BDAT 100 LAST\r\nshort"),
                    Reply("421 4.4.2 Idle timeout"),
                    Closed,
                ]),
            ],
        ),
        case(
            "BDAT: a 23-digit size swallows what follows as data",
            [
                envelope(c),
                steps([
                    send(format!(
                        "BDAT 99999999999999999999999 LAST\r\n{}HELP\r\n",
                        "x".repeat(999)
                    )),
                    Reply("421 4.4.2 Idle timeout"),
                    Closed,
                ]),
            ],
        ),
        case(
            "BDAT: a size that is no number",
            [envelope(c), steps([send("BDAT abc\r\n"), Reply("501 5.5.4")]), quit()],
        ),
        case(
            "BDAT: then DATA in the same transaction",
            [
                envelope(c),
                steps([
                    send("BDAT 3\r\nabc"),
                    Reply("250 2.0.0 3 octets received"),
                    send("DATA\r\n"),
                    Reply("503 5.5.1 BDAT and DATA cannot be mixed"),
                    send("BDAT 0 LAST\r\n"),
                    Reply(QUEUED),
                ]),
                quit(),
            ],
        )
        .delivers("abc"),
        case(
            "BDAT: without a transaction, the chunk is read, not run",
            [
                login(c),
                steps([send("BDAT 6 LAST\r\nHELP\r\n"), Reply("503 5.5.1 Need MAIL")]),
                quit(),
            ],
        ),
        // Garbage and early talkers.
        case(
            "garbage: binary bytes before EHLO",
            [
                greeting(),
                steps([
                    send([CLIENT_HELLO_START, b"garbage\r\n"].concat()),
                    Reply("500 5.5.2"),
                    send("EHLO hostile.test\r\n"),
                    Reply(EHLO_OK),
                ]),
                quit(),
            ],
        ),
        case(
            "garbage: commands before the greeting",
            [
                steps([send("EHLO early.hostile.test\r\nQUIT\r\n")]),
                greeting(),
                steps([Reply(EHLO_OK), Reply("221 2.0.0"), Closed]),
            ],
        ),
        case("garbage: a stream of unknown commands", [greeting(), garbage_stream]),
        case(
            "garbage: an HTTP request",
            [
                greeting(),
                steps([
                    send("GET / HTTP/1.1\r\nHost: relay.mailbridge.test\r\n\r\n"),
                    Reply("500 5.5.2"),
                    Reply("500 5.5.2"),
                    Reply("500 5.5.2"),
                ]),
                quit(),
            ],
        ),
        // TLS.
        case(
            "TLS: plaintext SMTP on the implicit-TLS port",
            [steps([send("EHLO plain.hostile.test\r\n"), Closed])],
        )
        .on(Listener::Submissions),
        case(
            "TLS: random bytes on the implicit-TLS port",
            [steps([send(noise(512)), Closed])],
        )
        .on(Listener::Submissions),
        case(
            "TLS: a ClientHello cut short on the implicit-TLS port",
            [steps([send(CLIENT_HELLO_START), Closed])],
        )
        .on(Listener::Submissions),
        case(
            "TLS: silence on the implicit-TLS port",
            [steps([Closed])],
        )
        .on(Listener::Submissions),
        case(
            "TLS: a ClientHello one byte every 300 ms",
            [steps([Dribble([CLIENT_HELLO_START, &noise(40)].concat()), Closed])],
        )
        .on(Listener::Submissions),
        case(
            "TLS: plaintext after STARTTLS",
            [
                hello(),
                steps([
                    send("STARTTLS\r\n"),
                    Reply("220 2.0.0"),
                    send(mail("")),
                    Closed,
                ]),
            ],
        ),
        case(
            "TLS: silence after STARTTLS",
            [hello(), steps([send("STARTTLS\r\n"), Reply("220 2.0.0"), Closed])],
        ),
        case(
            "TLS: commands pipelined after STARTTLS get no plaintext answer",
            [
                hello(),
                steps([send("STARTTLS\r\nNOOP\r\nQUIT\r\n"), Reply("220 2.0.0"), Closed]),
            ],
        ),
        case(
            "TLS: commands injected with STARTTLS are discarded (CVE-2011-0411)",
            [
                steps([
                    StartTls("NOOP\r\nMAIL FROM:<injected@attacker.example>\r\n"),
                    send("NOOP\r\n"),
                    Reply("250 2.0.0"),
                ]),
                quit(),
            ],
        )
        .origin(Origin::Elsewhere),
        case(
            "TLS: STARTTLS inside TLS",
            [
                steps([StartTls(""), send("STARTTLS\r\n"), Reply("503 5.5.1")]),
                quit(),
            ],
        )
        .origin(Origin::Elsewhere),
        case(
            "TLS: NUL bytes and garbage inside TLS",
            [steps([send("\0\0\0garbage\r\n"), Reply("500 5.5.2")]), quit()],
        )
        .on(Listener::SubmissionsTls)
        .origin(Origin::Elsewhere),
        case(
            "TLS: MAIL without AUTH inside TLS",
            [steps([send(mail("")), Reply("530 5.7.0")]), quit()],
        )
        .on(Listener::SubmissionsTls)
        .origin(Origin::Elsewhere),
        case(
            "TLS: a wrong password inside TLS",
            [
                steps([
                    send(format!(
                        "AUTH PLAIN {}\r\n",
                        plain("", "nobody-inside-tls", "guess")
                    )),
                    Reply("535 5.7.8"),
                ]),
                quit(),
            ],
        )
        .on(Listener::SubmissionsTls)
        .origin(Origin::Elsewhere),
        // Timeouts.
        case(
            "slowloris: a command one byte every 300 ms",
            [
                greeting(),
                steps([
                    Dribble(format!("EHLO {}\r\n", "s".repeat(60)).into_bytes()),
                    Reply("421 4.4.2 Connection time limit"),
                    Closed,
                ]),
            ],
        ),
        case(
            "slowloris: message data one byte every 300 ms",
            [
                data(c),
                steps([
                    Dribble("x".repeat(60).into_bytes()),
                    Reply("421 4.4.2 Connection time limit"),
                    Closed,
                ]),
            ],
        ),
        case(
            "timeout: silence after the greeting",
            [greeting(), steps([Reply("421 4.4.2 Idle timeout"), Closed])],
        ),
        case(
            "timeout: silence in the middle of a command",
            [
                greeting(),
                steps([send("EHLO half"), Reply("421 4.4.2 Idle timeout"), Closed]),
            ],
        ),
        case(
            "timeout: silence in the middle of AUTH",
            [
                hello(),
                steps([
                    send("AUTH PLAIN\r\n"),
                    Reply("334 "),
                    Reply("421 4.4.2 Idle timeout"),
                    Closed,
                ]),
            ],
        ),
        // The relay listener.
        case(
            "relay: an unknown address may not relay",
            [
                greeting(),
                steps([
                    send(
                        "HELO spam.example\r\nMAIL FROM:<x@spam.example>\r\nRCPT TO:<victim@attacker.example>\r\nDATA\r\n",
                    ),
                    Reply("250 2.0.0"),
                    Reply("250 2.1.0"),
                    Reply("550 5.7.1 Relaying denied"),
                    Reply("503 5.5.1 Need RCPT"),
                ]),
                quit(),
            ],
        )
        .on(Listener::Relay)
        .origin(Origin::Elsewhere),
        case(
            "relay: AUTH in clear on the relay port",
            [
                greeting(),
                steps([send("EHLO hostile.test\r\n"), Reply(EHLO_OK)]),
                steps([send(auth), Reply("538 5.7.11")]),
                quit(),
            ],
        )
        .on(Listener::Relay)
        .origin(Origin::Elsewhere),
        // Floods.
        case(
            "flood: 100 sessions at once from one address",
            [
                hello(),
                quit(),
            ],
        )
        .origin(Origin::Fixed(FLOODER))
        .copies(100),
        case(
            "flood: 50 idle connections from one address are all cut off",
            [greeting(), steps([Reply("421 4.4.2 Idle timeout"), Closed])],
        )
        .origin(Origin::Fixed(IDLE_FLOODER))
        .copies(50),
    ]);
    cases
}

/// A TCP stream that writes `inject` in the same packet as the client's STARTTLS
/// command: plaintext a man in the middle slips in, to be read as if sent inside TLS.
#[derive(Debug)]
struct Injecting {
    stream: TcpStream,
    inject: Vec<u8>,
    /// The STARTTLS command with the injected bytes, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl AsyncRead for Injecting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Injecting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() && buf == b"STARTTLS\r\n" && !this.inject.is_empty() {
            let packet = [buf, &this.inject].concat();
            this.inject.clear();
            this.pending = Some((packet, 0));
        }
        let Some((packet, written)) = &mut this.pending else {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        };
        while *written < packet.len() {
            match Pin::new(&mut this.stream).poll_write(cx, &packet[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.pending = None;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Injecting {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
}

/// Text that lettre writes as it is.
struct Raw(String);

impl std::fmt::Display for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The session's connection: bytes on the wire, or a TLS client's.
enum Conn {
    Plain(BufReader<TcpStream>),
    Tls {
        conn: Box<AsyncSmtpConnection>,
        /// Written with the next reply read.
        pending: Vec<u8>,
    },
}

/// What a hostile session needs to know about the stack.
struct Target {
    submission: SocketAddr,
    submissions: SocketAddr,
    relay: SocketAddr,
    tls: TlsParameters,
}

fn tls_parameters(app: &TestApp) -> TlsParameters {
    TlsParameters::builder("localhost".to_owned())
        .add_root_certificate(Certificate::from_pem(&app.edge_ca_pem()).expect("the edge's CA"))
        .build_rustls()
        .expect("TLS parameters")
}

fn hello_name() -> ClientId {
    ClientId::Domain("hostile.test".to_owned())
}

async fn connect_from(ip: Ipv4Addr, to: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(ip.into(), 0))
        .map_err(|e| format!("binding {ip}: {e}"))?;
    let stream = socket.connect(to).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A reply as "code text" of its first line, from lettre's answer.
fn lettre_reply(
    answer: Result<Response, lettre::transport::smtp::Error>,
) -> Result<String, String> {
    match answer {
        Ok(response) => Ok(format!(
            "{} {}",
            response.code(),
            response.first_line().unwrap_or_default()
        )),
        Err(e) => match (e.status(), e.source()) {
            (Some(code), Some(text)) => Ok(format!(
                "{code} {}",
                text.to_string().lines().next().unwrap_or_default()
            )),
            _ => Err(format!("no reply: {e}")),
        },
    }
}

/// Reads one (possibly multi-line) reply; returns its first line, "250-x" as "250 x".
async fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut first: Option<String> = None;
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(WAIT, reader.read_until(b'\n', &mut line))
            .await
            .map_err(|_| format!("no reply within {WAIT:?}"))?;
        match read {
            Ok(0) => return Err(format!("closed (after {first:?})")),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
        let more = line.get(3) == Some(&b'-');
        if line.len() > 3 {
            line[3] = b' ';
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        let first = first.get_or_insert(text);
        if !more {
            return Ok(first.clone());
        }
    }
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) {
        match self {
            // A write into a connection the edge already closed shows in the next
            // reply expected.
            Conn::Plain(reader) => {
                let _ = reader.get_mut().write_all(bytes).await;
            }
            Conn::Tls { pending, .. } => pending.extend_from_slice(bytes),
        }
    }

    async fn reply(&mut self) -> Result<String, String> {
        match self {
            Conn::Plain(reader) => read_reply(reader).await,
            Conn::Tls { conn, pending } => {
                let answer = if pending.is_empty() {
                    tokio::time::timeout(WAIT, conn.read_response()).await
                } else {
                    let command = Raw(String::from_utf8(std::mem::take(pending)).expect("text"));
                    tokio::time::timeout(WAIT, conn.command(command)).await
                };
                lettre_reply(answer.map_err(|_| format!("no reply within {WAIT:?}"))?)
            }
        }
    }

    /// Ok if the edge closes without another reply.
    async fn closed(&mut self) -> Result<(), String> {
        match self {
            Conn::Plain(reader) => {
                let mut rest = Vec::new();
                let read = tokio::time::timeout(WAIT, reader.read_to_end(&mut rest)).await;
                match read {
                    Err(_) => Err(format!("still open after {WAIT:?}")),
                    // An SMTP reply starts with its code; a TLS alert does not.
                    Ok(_) if rest.first().is_some_and(u8::is_ascii_digit) => Err(format!(
                        "another reply: {:?}",
                        String::from_utf8_lossy(&rest)
                    )),
                    Ok(_) => Ok(()),
                }
            }
            Conn::Tls { .. } => match self.reply().await {
                Ok(reply) => Err(format!("another reply: {reply}")),
                Err(_) => Ok(()),
            },
        }
    }

    /// Writes `bytes` one by one until the edge answers or closes.
    async fn dribble(&mut self, bytes: &[u8]) {
        let Conn::Plain(reader) = self else {
            panic!("dribbling is for connections in clear");
        };
        for byte in bytes {
            tokio::select! {
                biased;
                _ = reader.fill_buf() => return,
                () = tokio::time::sleep(DRIBBLE_PAUSE) => {}
            }
            if reader.get_mut().write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    }
}

/// How a session went otherwise than the catalogue says.
#[derive(Debug, Clone)]
enum Miss {
    /// "Try again later" (4xx) where the catalogue expects a final answer: the
    /// database or the machine was slow for a moment. A device retries such an
    /// answer, and so does the run, once.
    Later(String),
    Wrong(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Later(what) | Miss::Wrong(what) => f.write_str(what),
        }
    }
}

impl From<String> for Miss {
    fn from(what: String) -> Self {
        Miss::Wrong(what)
    }
}

/// What one session of a case came to: the queue ids of the messages accepted in
/// it, in order, and whether it went as the catalogue says.
#[derive(Debug)]
struct Outcome {
    queued: Vec<String>,
    result: Result<(), Miss>,
}

/// Runs one session of `case`.
async fn run_case(case: &Case, ip: Ipv4Addr, target: &Target) -> Outcome {
    let mut queued = Vec::new();
    let result = session(case, ip, target, &mut queued).await;
    Outcome { queued, result }
}

async fn session(
    case: &Case,
    ip: Ipv4Addr,
    target: &Target,
    queued: &mut Vec<String>,
) -> Result<(), Miss> {
    let addr = match case.listener {
        Listener::Submission => target.submission,
        Listener::Submissions | Listener::SubmissionsTls => target.submissions,
        Listener::Relay => target.relay,
    };
    let start_tls = match case.steps.first() {
        Some(StartTls(inject)) => Some(*inject),
        _ => None,
    };
    let mut conn = match (case.listener, start_tls) {
        (Listener::SubmissionsTls, _) => {
            let conn = AsyncSmtpConnection::connect_tokio1(
                addr,
                Some(WAIT),
                &hello_name(),
                Some(target.tls.clone()),
                Some(IpAddr::V4(ip)),
            )
            .await
            .map_err(|e| format!("implicit TLS: {e}"))?;
            Conn::Tls {
                conn: Box::new(conn),
                pending: Vec::new(),
            }
        }
        (Listener::Submission, Some(inject)) => {
            let stream = Injecting {
                stream: connect_from(ip, addr).await?,
                inject: inject.as_bytes().to_vec(),
                pending: None,
            };
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello_name())
                    .await
                    .map_err(|e| format!("before STARTTLS: {e}"))?;
            conn.starttls(target.tls.clone(), &hello_name())
                .await
                .map_err(|e| format!("STARTTLS: {e}"))?;
            let info = conn.server_info();
            if info.name() != HOSTNAME || !info.supports_auth_mechanism(Mechanism::Plain) {
                return Err(
                    format!("the first answer inside TLS was not the EHLO's: {info:?}").into(),
                );
            }
            Conn::Tls {
                conn: Box::new(conn),
                pending: Vec::new(),
            }
        }
        _ => Conn::Plain(BufReader::new(connect_from(ip, addr).await?)),
    };
    let skip = usize::from(start_tls.is_some());
    for (i, step) in case.steps.iter().enumerate().skip(skip) {
        let failed = |what: String| format!("step {i} ({step:?}): {what}");
        match step {
            Step::Send(bytes) => conn.send(bytes).await,
            Pieces(bytes, size) => {
                for piece in bytes.chunks(*size) {
                    conn.send(piece).await;
                    tokio::time::sleep(PIECE_PAUSE).await;
                }
            }
            Dribble(bytes) => conn.dribble(bytes).await,
            Reply(expected) => {
                let reply = conn.reply().await.map_err(failed)?;
                if !reply.starts_with(expected) {
                    let miss = failed(format!("got {reply:?}"));
                    let later = reply.starts_with('4') && !expected.starts_with('4');
                    return Err(if later {
                        Miss::Later(miss)
                    } else {
                        miss.into()
                    });
                }
                if let Some(id) = reply.strip_prefix(QUEUED) {
                    queued.push(id.trim().to_owned());
                }
            }
            Closed => conn.closed().await.map_err(failed)?,
            StartTls(_) => return Err(failed("STARTTLS is only a first step".into()).into()),
        }
    }
    Ok(())
}

/// Runs the catalogue, each case at once with the others unless it waits for one,
/// and once more a session the edge told to try again later; returns every case's
/// sessions, each with its attempts.
async fn run_catalogue(cases: Vec<Case>, target: Arc<Target>) -> Vec<(Case, Vec<Vec<Outcome>>)> {
    let addresses: Arc<Vec<Ipv4Addr>> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let n = u8::try_from(i + 1).expect("fewer than 255 cases");
            match case.origin {
                Origin::ClearAuth => Ipv4Addr::new(127, 0, 1, n),
                Origin::Elsewhere => Ipv4Addr::new(127, 0, 2, n),
                Origin::RelayDevice => RELAY_DEVICE,
                Origin::Fixed(ip) => ip,
            }
        })
        .collect::<Vec<_>>()
        .into();
    // A case that waits for another runs after it, in the same task.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        match case.after {
            None => groups.push(vec![i]),
            Some(first) => groups
                .iter_mut()
                .find(|group| cases[group[0]].name == first)
                .unwrap_or_else(|| panic!("{}: no case {first:?} to wait for", case.name))
                .push(i),
        }
    }
    let cases = Arc::new(cases);
    let mut tasks = JoinSet::new();
    for (k, group) in groups.into_iter().enumerate() {
        // Started a little apart: a storm, not one instant's spike.
        let start = STAGGER * u32::try_from(k).expect("few groups");
        let copies = cases[group[0]].copies;
        for _ in 0..copies {
            let (cases, target, addresses, group) = (
                cases.clone(),
                target.clone(),
                addresses.clone(),
                group.clone(),
            );
            tasks.spawn(async move {
                tokio::time::sleep(start).await;
                let mut outcomes = Vec::new();
                for i in group {
                    outcomes.push((i, run_case(&cases[i], addresses[i], &target).await));
                }
                outcomes
            });
        }
    }
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = (0..cases.len()).map(|_| Vec::new()).collect();
    while let Some(done) = tasks.join_next().await {
        for (i, outcome) in done.expect("a hostile session task panicked") {
            outcomes[i].push(vec![outcome]);
        }
    }
    for (i, sessions) in outcomes.iter_mut().enumerate() {
        for attempts in sessions.iter_mut() {
            if let Err(Miss::Later(first)) = &attempts[0].result {
                eprintln!(
                    "{}: told to try again later, once more: {first}",
                    cases[i].name
                );
                attempts.push(run_case(&cases[i], addresses[i], &target).await);
            }
        }
    }
    let cases = Arc::try_unwrap(cases).expect("all tasks done");
    cases.into_iter().zip(outcomes).collect()
}

/// A message the edge said `250` to, and how it must arrive.
#[derive(Debug)]
struct Accepted {
    what: String,
    entra_tenant: uuid::Uuid,
    mailbox: String,
    /// The message after the edge's trace header.
    body: Vec<u8>,
}

/// The queue id in a `250 2.0.0 OK queued as <id>` answer's text.
fn queue_id(text: &str) -> Option<String> {
    text.rsplit_once("queued as ")
        .map(|(_, id)| id.trim().to_owned())
}

/// Sends through STARTTLS and AUTH with lettre, a fresh connection each time, until
/// `stop` is set (and at least `at_least` times); returns what was accepted.
async fn keep_sending(
    app: Arc<TestApp>,
    tenant: TestTenant,
    device: IssuedCredential,
    stop: Arc<AtomicBool>,
    at_least: usize,
) -> Vec<Result<(String, Accepted), String>> {
    let sender = tenant.tenant.sender_mailbox.clone();
    let recipient = format!("empfang@{}.example", device.device.username);
    let envelope = Envelope::new(
        Some(sender.parse().expect("sender")),
        vec![recipient.parse().expect("recipient")],
    )
    .expect("envelope");
    let mut outcomes: Vec<Result<(String, Accepted), String>> = Vec::new();
    let mut retries = 0;
    for n in 0.. {
        let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
        if accepted >= at_least && stop.load(Ordering::SeqCst) {
            break;
        }
        let what = format!("{} message {n}", device.device.name);
        let message = sample_message(&sender, &recipient, &what);
        let sent = app
            .lettre(&device.device.username, &device.password)
            .send_raw(&envelope, without_final_crlf(&message))
            .await;
        match sent {
            Ok(response) => outcomes.push(match response.first_line().and_then(queue_id) {
                Some(id) => Ok((
                    id,
                    Accepted {
                        what,
                        entra_tenant: tenant.entra(),
                        mailbox: sender.clone(),
                        body: message.into_bytes(),
                    },
                )),
                None => Err(format!("{what}: {response:?}")),
            }),
            // A device retries "try again later"; so does this one, a few times.
            Err(e) if e.is_transient() && retries < 10 => retries += 1,
            Err(e) => outcomes.push(Err(format!("{what}: {e}"))),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outcomes
}

/// Names the threads of the runtime the stack runs on, so that its panics can be told
/// from other tests'.
const STACK_THREADS: &str = "hostile-stack";

/// Counts panics on the stack's threads (a session task that panics is dropped by
/// the runtime without a trace otherwise).
struct PanicWatch(Arc<AtomicUsize>);

impl PanicWatch {
    fn install() -> Self {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(STACK_THREADS) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
        Self(count)
    }

    fn panics(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The queue id in the edge's trace header, and the message after that header.
fn split_trace(mime: &str) -> Option<(&str, &[u8])> {
    let id = mime.split_once(" id ")?.1.get(..32)?;
    let bytes = mime.as_bytes();
    let end = trace_end(bytes)?;
    // The Message-ID the edge adds to a message without one (named by the queue id)
    // belongs to the trace too.
    let added = format!("Message-ID: <{id}@");
    let end = if mime[end..].starts_with(&added) {
        end + trace_end(&bytes[end..])?
    } else {
        end
    };
    Some((id, &bytes[end..]))
}

/// Where the first header field (with its folded lines) ends.
fn trace_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len().saturating_sub(1))
        .filter(|&i| bytes[i] == b'\r' && bytes[i + 1] == b'\n')
        .map(|i| i + 2)
        .find(|&end| !matches!(bytes.get(end), Some(b' ' | b'\t')))
}

#[test]
fn hostile_sessions_under_load_get_their_answers_and_smuggle_nothing() {
    let watch = PanicWatch::install();
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(STACK_THREADS)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(under_load(&watch));
}

async fn under_load(watch: &PanicWatch) {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.edge.plaintext_auth_networks = CLEAR_AUTH_NETWORKS.parse().unwrap();
        s.edge.limits.idle_timeout = IDLE;
        s.edge.limits.session_timeout = SESSION;
        s.edge.limits.max_message_size = MAX_MESSAGE;
        s.edge.limits.max_recipients = MAX_RECIPIENTS;
        s.edge.limits.max_errors = 10;
        s.edge.auth_throttle.lockout_failures = LOCKOUT_FAILURES;
        s.edge.auth_throttle.source_lockout_failures = LOCKOUT_FAILURES;
        s.edge.auth_throttle.username_lockout_failures = LOCKOUT_FAILURES;
    })
    .await;
    assert_eq!(app.stack.settings.edge.hostname, HOSTNAME);
    let hostile = app.add_tenant("Praxis Feindlich").await;
    let device = app.add_device(&hostile, "Angreifer").await;
    let victim = app.add_device(&hostile, "Opfer").await;
    let relay_device = app.add_device(&hostile, "Altgeraet").await;
    devices::change_policy(
        app.pool(),
        relay_device.device.id,
        PolicyChange {
            allowed_networks: Some(vec![format!("{RELAY_DEVICE}/32").parse().unwrap()]),
            listener: Some(DeviceListener::Relay),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ctx = Ctx {
        username: device.device.username.clone(),
        password: device.password.clone(),
        sender: hostile.tenant.sender_mailbox.clone(),
        victim: victim.device.username.clone(),
        victim_password: victim.password.clone(),
    };
    let mut customers = Vec::new();
    for name in ["Praxis Nord", "Praxis Sued", "Klinik West"] {
        let tenant = app.add_tenant(name).await;
        let devices = vec![
            app.add_device(&tenant, "Scanner").await,
            app.add_device(&tenant, "Labor").await,
        ];
        customers.push((tenant, devices));
    }
    let target = Arc::new(Target {
        submission: app.stack.smtp_addr,
        submissions: app.stack.smtps_addr.expect("implicit TLS listener"),
        relay: app.stack.relay_addr.expect("relay listener"),
        tls: tls_parameters(&app),
    });
    let app = Arc::new(app);

    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = JoinSet::new();
    for (tenant, devices) in &customers {
        for device in devices {
            traffic.spawn(keep_sending(
                app.clone(),
                tenant.clone(),
                IssuedCredential {
                    device: device.device.clone(),
                    password: device.password.clone(),
                },
                stop.clone(),
                3,
            ));
        }
    }
    let cases = catalogue(&ctx);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let started = Instant::now();
    let outcomes = run_catalogue(cases, target).await;
    stop.store(true, Ordering::SeqCst);
    let catalogue_took = started.elapsed();

    let mut failures = Vec::new();
    let mut expected: HashMap<String, Accepted> = HashMap::new();
    let hostile_tenant = hostile.tenant.entra_tenant_id.expect("connected");
    for (case, sessions) in &outcomes {
        assert_eq!(sessions.len(), case.copies, "{}", case.name);
        for attempts in sessions {
            // Whatever an attempt had accepted stays accepted.
            for attempt in attempts {
                if attempt.queued.len() > case.delivers.len() {
                    failures.push(format!("{}: accepted {:?}", case.name, attempt.queued));
                }
                for (id, body) in attempt.queued.iter().zip(&case.delivers) {
                    let accepted = Accepted {
                        what: case.name.to_owned(),
                        entra_tenant: hostile_tenant.as_uuid(),
                        mailbox: hostile.tenant.sender_mailbox.clone(),
                        body: body.clone(),
                    };
                    expected.insert(id.clone(), accepted);
                }
            }
            let last = attempts.last().expect("an attempt");
            match &last.result {
                Err(e) => failures.push(format!("{}: {e}", case.name)),
                Ok(()) if last.queued.len() != case.delivers.len() => failures.push(format!(
                    "{}: {} messages accepted, {} expected",
                    case.name,
                    last.queued.len(),
                    case.delivers.len()
                )),
                Ok(()) => {}
            }
        }
    }
    let mut sent_per_device = Vec::new();
    while let Some(sent) = traffic.join_next().await {
        let sent = sent.expect("a sending device task panicked");
        sent_per_device.push(sent.len());
        for outcome in sent {
            match outcome {
                Ok((id, accepted)) => {
                    expected.insert(id, accepted);
                }
                Err(e) => failures.push(format!("normal traffic refused: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The edge still serves: every customer's device sends once more, and a bare
    // session still gets its greeting and EHLO answer.
    for (tenant, devices) in &customers {
        let device = &devices[0];
        let last = keep_sending(
            app.clone(),
            tenant.clone(),
            IssuedCredential {
                device: device.device.clone(),
                password: device.password.clone(),
            },
            Arc::new(AtomicBool::new(true)),
            1,
        )
        .await;
        for outcome in last {
            let (id, accepted) = outcome.expect("accepted after the hostile sessions");
            expected.insert(id, accepted);
        }
    }
    let (mut probe, greeting) = SmtpProbe::connect(app.stack.smtp_addr).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    probe.expect("EHLO after.test", "250").await;

    // Every 250 is delivered once, byte for byte, through its own tenant; nothing
    // else is delivered or even queued.
    let queued: HashSet<String> = app
        .message_ids()
        .await
        .into_iter()
        .map(|id| id.simple().to_string())
        .collect();
    let said_250: HashSet<String> = expected.keys().cloned().collect();
    assert_eq!(
        queued.difference(&said_250).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "queued without a 250"
    );
    assert_eq!(
        queued.len(),
        said_250.len(),
        "a 250 without a queued message"
    );
    let directory = &app.stack.simulator.directory;
    let deadline = Instant::now() + Duration::from_secs(40);
    let delivered = loop {
        let delivered = directory.delivered();
        if delivered.len() >= expected.len() || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut seen = HashSet::new();
    for message in &delivered {
        let Some((id, body)) = split_trace(&message.mime) else {
            panic!(
                "delivered without the edge's trace header: {:?}",
                message.mime
            );
        };
        assert!(seen.insert(id.to_owned()), "delivered twice: {id}");
        let Some(accepted) = expected.get(id) else {
            panic!("delivered without a 250: {message:?}");
        };
        assert_eq!(
            (message.tenant_id, message.mailbox.as_str()),
            (accepted.entra_tenant, accepted.mailbox.as_str()),
            "{}: through the wrong tenant",
            accepted.what
        );
        assert!(
            body == accepted.body.as_slice(),
            "{}: changed on the way:\n{:?}\ninstead of\n{:?}",
            accepted.what,
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&accepted.body)
        );
        assert!(
            !message
                .recipients
                .iter()
                .any(|r| r.ends_with("@attacker.example")),
            "{}: a smuggled recipient got it",
            accepted.what
        );
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|(id, _)| !seen.contains(*id))
        .map(|(_, accepted)| accepted.what.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but not delivered: {missing:?}"
    );
    assert!(
        sent_per_device.iter().all(|&n| n >= 3),
        "devices sent {sent_per_device:?} messages while the catalogue ran ({catalogue_took:?})"
    );

    assert_eq!(watch.panics(), 0, "a task of the stack panicked");
    let app = Arc::try_unwrap(app).ok().expect("no task holds the stack");
    tokio::time::timeout(Duration::from_secs(30), app.stack.shutdown())
        .await
        .expect("the stack shuts down");
}
