//! Session transcripts: what a device did on the edge, for the technician who is told
//! "the scanner doesn't send". One record per SMTP session — time, source, listener,
//! the TLS version and cipher or why the handshake failed, and each command with its
//! reply codes; never passwords, AUTH payloads or message data. Kept per device (a
//! login name that was given counts, even with a wrong password) or, for sessions
//! that never named a device, per source address; trimmed to the last few per key
//! when written and purged after a short retention (see `retention`).
//!
//! The diagnosis reads a device's transcripts and says in words (English and
//! German) what went wrong: the password before STARTTLS, a TLS version too old for
//! the normal listener, a wrong password so many times since when, and the like.
//!
//! Over 500 lines: about 120 of them are unit tests; the rest follows one record from
//! the edge (`Transcript`) through storage (`session_transcripts`) to the diagnosis,
//! which reads the same lines the edge records.

use crate::ids::DeviceId;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json};

use crate::{
    i18n::{self, Lang},
    tr,
};

/// Lines kept of one session; the rest are counted, not kept.
pub const MAX_LINES: usize = 40;
/// Longest command text kept (a verb and, for AUTH, the mechanism's name).
const MAX_COMMAND: usize = 24;

/// One command (or input step) and the reply codes it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TranscriptLine)]
pub struct Line {
    /// Milliseconds since the session started.
    pub at_ms: u64,
    /// The verb (`EHLO`, `MAIL` …), `AUTH` with its mechanism, or a step without a
    /// verb in brackets (`(AUTH response)`, `(message data)`, `(TLS handshake)`).
    pub command: String,
    /// Each reply as its code and enhanced status code (`535 5.7.8`).
    pub replies: Vec<String>,
}

/// A session as the edge records it.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub device_id: Option<DeviceId>,
    pub source: IpAddr,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub listener: &'static str,
    pub tls_protocol: Option<String>,
    pub tls_cipher: Option<String>,
    /// Why the TLS handshake failed, in words.
    pub tls_failure: Option<String>,
    /// How the session ended: `quit`, `disconnected`, `closed` (by the edge with a
    /// 421), `tls_failed`.
    pub outcome: &'static str,
    pub lines: Vec<Line>,
    /// Lines beyond [`MAX_LINES`], not kept.
    pub omitted: usize,
}

impl Transcript {
    pub fn new(source: IpAddr, listener: &'static str) -> Self {
        let now = Utc::now();
        Self {
            device_id: None,
            source,
            started_at: now,
            ended_at: now,
            listener,
            tls_protocol: None,
            tls_cipher: None,
            tls_failure: None,
            outcome: "disconnected",
            lines: Vec::new(),
            omitted: 0,
        }
    }

    /// Records `command` (bounded, printable) with the replies found in `written`
    /// (the bytes the edge answered it with).
    pub fn record(&mut self, command: &str, written: &[u8]) {
        if self.lines.len() >= MAX_LINES {
            self.omitted += 1;
            return;
        }
        let command: String = command
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_COMMAND)
            .collect();
        let at_ms = (Utc::now() - self.started_at).num_milliseconds().max(0) as u64;
        self.lines.push(Line {
            at_ms,
            command,
            replies: reply_codes(written),
        });
    }
}

/// The final reply lines' codes in `written` (`250-` continuation lines are skipped):
/// `"535 5.7.8"`, or `"354"` without an enhanced code.
fn reply_codes(written: &[u8]) -> Vec<String> {
    written
        .split(|&b| b == b'\n')
        .filter(|line| line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit))
        .filter(|line| line[3] == b' ' || line[3] == b'\r')
        .map(|line| {
            let code = String::from_utf8_lossy(&line[..3]).into_owned();
            let enhanced = line[4..]
                .split(|&b| b == b' ' || b == b'\r')
                .next()
                .filter(|e| {
                    e.len() >= 5
                        && e.len() <= 11
                        && e.iter().all(|b| b.is_ascii_digit() || *b == b'.')
                });
            match enhanced {
                Some(e) => format!("{code} {}", String::from_utf8_lossy(e)),
                None => code,
            }
        })
        .take(4)
        .collect()
}

/// The part of a command line a transcript keeps: the verb, and for AUTH the
/// mechanism (never an initial response).
pub fn command_of(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    let verb: String = words
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .take(12)
        .collect::<String>()
        .to_ascii_uppercase();
    if verb.is_empty() {
        return "(unreadable)".to_owned();
    }
    if verb == "AUTH" {
        let mechanism: String = words
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(MAX_COMMAND - 5)
            .collect::<String>()
            .to_ascii_uppercase();
        return format!("AUTH {mechanism}").trim_end().to_owned();
    }
    verb
}

/// Writes `batch` and trims every device and source it touched to its last
/// `keep`, in one transaction.
pub async fn write(pool: &PgPool, batch: &[Transcript], keep: u32) -> Result<(), sqlx::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let lines: Vec<serde_json::Value> = batch
        .iter()
        .map(|t| {
            let mut lines = serde_json::to_value(&t.lines).unwrap_or_default();
            if t.omitted > 0
                && let Some(array) = lines.as_array_mut()
            {
                array.push(serde_json::json!({
                    "at_ms": (t.ended_at - t.started_at).num_milliseconds().max(0),
                    "command": format!("({} more)", t.omitted),
                    "replies": [],
                }));
            }
            lines
        })
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO session_transcripts
             (device_id, tenant_id, source_addr, started_at, ended_at, listener, tls_protocol,
              tls_cipher, tls_failure, outcome, lines)
         SELECT t.device_id, d.tenant_id, t.source_addr, t.started_at, t.ended_at, t.listener,
                t.tls_protocol, t.tls_cipher, t.tls_failure, t.outcome, t.lines
           FROM unnest($1::uuid[], $2::inet[], $3::timestamptz[], $4::timestamptz[],
                       $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[])
                AS t(device_id, source_addr, started_at, ended_at, listener, tls_protocol,
                     tls_cipher, tls_failure, outcome, lines)
           LEFT JOIN devices d ON d.id = t.device_id",
        &batch.iter().map(|t| t.device_id).collect::<Vec<_>>() as &[Option<DeviceId>],
        &batch
            .iter()
            .map(|t| IpNet::from(t.source))
            .collect::<Vec<_>>(),
        &batch.iter().map(|t| t.started_at).collect::<Vec<_>>(),
        &batch.iter().map(|t| t.ended_at).collect::<Vec<_>>(),
        &batch
            .iter()
            .map(|t| t.listener.to_owned())
            .collect::<Vec<_>>(),
        &batch
            .iter()
            .map(|t| t.tls_protocol.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &batch
            .iter()
            .map(|t| t.tls_cipher.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &batch
            .iter()
            .map(|t| t.tls_failure.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &batch
            .iter()
            .map(|t| t.outcome.to_owned())
            .collect::<Vec<_>>(),
        &lines,
    )
    .execute(&mut *tx)
    .await?;
    let mut devices: Vec<DeviceId> = batch.iter().filter_map(|t| t.device_id).collect();
    devices.sort_unstable();
    devices.dedup();
    let mut sources: Vec<IpNet> = batch
        .iter()
        .filter(|t| t.device_id.is_none())
        .map(|t| IpNet::from(t.source))
        .collect();
    sources.sort_unstable();
    sources.dedup();
    sqlx::query!(
        "DELETE FROM session_transcripts WHERE id IN (
             SELECT id FROM (
                 SELECT id, row_number() OVER (PARTITION BY device_id
                                               ORDER BY started_at DESC, id DESC) AS n
                   FROM session_transcripts WHERE device_id = ANY($1)) ranked
              WHERE n > $3
             UNION ALL
             SELECT id FROM (
                 SELECT id, row_number() OVER (PARTITION BY source_addr
                                               ORDER BY started_at DESC, id DESC) AS n
                   FROM session_transcripts
                  WHERE device_id IS NULL AND source_addr = ANY($2)) ranked
              WHERE n > $3)",
        &devices as &[DeviceId],
        &sources,
        i64::from(keep),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A stored transcript, as the control plane and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Transcript)]
pub struct StoredTranscript {
    pub id: i64,
    pub device_id: Option<DeviceId>,
    #[schema(value_type = String)]
    pub source_addr: IpNet,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub listener: String,
    pub tls_protocol: Option<String>,
    pub tls_cipher: Option<String>,
    pub tls_failure: Option<String>,
    pub outcome: String,
    #[schema(value_type = Vec<Line>)]
    pub lines: Json<Vec<Line>>,
}

impl StoredTranscript {
    /// The source address without its prefix length.
    pub fn source(&self) -> IpAddr {
        self.source_addr.addr()
    }

    /// Whether it ran over TLS older than 1.2.
    pub fn legacy_protocol(&self) -> bool {
        self.tls_protocol
            .as_deref()
            .is_some_and(|p| p == "TLSv1.0" || p == "TLSv1.1")
    }

    /// The lines as one text each: `AUTH LOGIN → 334, 334, 535 5.7.8`.
    pub fn line_texts(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| {
                if l.replies.is_empty() {
                    l.command.clone()
                } else {
                    format!("{} → {}", l.command, l.replies.join(", "))
                }
            })
            .collect()
    }
}

/// A device's sessions (newest first, at most `limit`) and, interleaved by time,
/// those from its sites' addresses that never named a device (handshake failures,
/// sessions that gave up before AUTH): from its allow-list and the networks it was
/// last seen from.
pub async fn for_device(
    pool: &PgPool,
    device_id: DeviceId,
    limit: i64,
) -> Result<Vec<StoredTranscript>, sqlx::Error> {
    sqlx::query_as!(
        StoredTranscript,
        r#"(SELECT id AS "id!", device_id AS "device_id: DeviceId", source_addr AS "source_addr!",
                 started_at AS "started_at!", ended_at AS "ended_at!", listener AS "listener!",
                 tls_protocol, tls_cipher, tls_failure, outcome AS "outcome!",
                 lines AS "lines!: Json<Vec<Line>>"
            FROM session_transcripts WHERE device_id = $1
           ORDER BY started_at DESC LIMIT $2)
         UNION ALL
         (SELECT t.id, t.device_id, t.source_addr, t.started_at, t.ended_at, t.listener,
                 t.tls_protocol, t.tls_cipher, t.tls_failure, t.outcome, t.lines
            FROM session_transcripts t, devices d
           WHERE d.id = $1 AND t.device_id IS NULL
             AND (t.source_addr <<= ANY(d.allowed_networks)
                  OR t.source_addr = d.last_seen_addr
                  OR t.source_addr <<= ANY(ARRAY(SELECT source FROM device_sources s
                                                  WHERE s.device_id = $1)))
           ORDER BY t.started_at DESC LIMIT $2)
         ORDER BY 4 DESC"#,
        device_id as DeviceId,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// The sessions from `source` that never named a device, newest first.
pub async fn for_source(
    pool: &PgPool,
    source: IpAddr,
    limit: i64,
) -> Result<Vec<StoredTranscript>, sqlx::Error> {
    sqlx::query_as!(
        StoredTranscript,
        r#"SELECT id, device_id AS "device_id: DeviceId", source_addr, started_at, ended_at, listener, tls_protocol,
                tls_cipher, tls_failure, outcome, lines AS "lines: Json<Vec<Line>>"
           FROM session_transcripts WHERE device_id IS NULL AND source_addr = $1
          ORDER BY started_at DESC LIMIT $2"#,
        IpNet::from(source),
        limit,
    )
    .fetch_all(pool)
    .await
}

/// One thing the transcripts show, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable key (`wrong_password`, `tls_too_old` …).
    pub key: &'static str,
    /// Sessions it was seen in.
    pub count: usize,
    /// The first of them.
    pub since: DateTime<Utc>,
    /// Detail from the sessions (a mechanism, a TLS version, a handshake error).
    pub detail: Option<String>,
}

impl Finding {
    /// What it means and what to do, in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        let detail = self.detail.as_deref().unwrap_or_default();
        let since = self
            .since
            .format(i18n::translate(lang, "%Y-%m-%d %H:%M UTC"))
            .to_string();
        let n = i64::try_from(self.count).unwrap_or(i64::MAX);
        let times = i18n::plural(lang, "once", "{n} times", n, &[]);
        let sessions = i18n::plural(lang, "{n} session", "{n} sessions", n, &[]);
        let values: [(&str, &dyn std::fmt::Display); 4] = [
            ("times", &times),
            ("since", &since),
            ("detail", &detail),
            ("sessions", &sessions),
        ];
        let english = match self.key {
            "password_before_starttls" => tr!(
                "The device sent its password before STARTTLS ({times} since {since}): switch on STARTTLS (or SSL/TLS) in its e-mail settings."
            ),
            "tls_too_old" => tr!(
                "TLS handshake failed: the device offers only {detail} — use the legacy-TLS listener and allow legacy TLS for this device ({times} since {since})."
            ),
            "tls_failed" => tr!(
                "TLS handshake failed ({times} since {since}): {detail}. If the device's firmware is old, it may not trust today's certificates or may need the legacy-TLS listener."
            ),
            "wrong_password" => tr!(
                "Wrong password {times} since {since}: enter the device's current password (rotate it if nobody has it)."
            ),
            "locked_out" => tr!(
                "Logins were refused for now ({times} since {since}): locked out after repeated failures (fix the password, then unlock the device), or a passing failure on mailbridge's side."
            ),
            "unsupported_mechanism" => tr!(
                "The device tries AUTH {detail}, which mailbridge does not offer ({times} since {since}): choose LOGIN or PLAIN authentication in its settings."
            ),
            "not_legacy_device" => tr!(
                "The device logged in on the legacy-TLS listener but is not allowed legacy TLS ({times} since {since}): allow legacy TLS for it, or move it to the normal port if it can do TLS 1.2."
            ),
            "no_login" => tr!(
                "The device tried to send without logging in ({times} since {since}): switch on SMTP authentication with its username and password."
            ),
            "legacy_tls_in_use" => tr!(
                "The device uses {detail} on the legacy-TLS listener ({sessions} since {since}): retire it when a firmware update brings TLS 1.2."
            ),
            _ => {
                return i18n::format(
                    lang,
                    "{key} ({times} since {since})",
                    &[("key", &self.key), ("times", &times), ("since", &since)],
                );
            }
        };
        i18n::format(lang, english, &values)
    }
}

/// What `transcripts` (any order) show, most frequent first. Empty when nothing
/// went wrong.
pub fn diagnose(transcripts: &[StoredTranscript]) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    let mut note = |key: &'static str, at: DateTime<Utc>, detail: Option<String>| match findings
        .iter_mut()
        .find(|f| f.key == key)
    {
        Some(f) => {
            f.count += 1;
            if at < f.since {
                f.since = at;
                if detail.is_some() {
                    f.detail = detail;
                }
            }
        }
        None => findings.push(Finding {
            key,
            count: 1,
            since: at,
            detail,
        }),
    };
    for t in transcripts {
        let at = t.started_at;
        if let Some(failure) = &t.tls_failure {
            match offered_only_old_tls(failure) {
                Some(version) if !t.listener.starts_with("legacy") => {
                    note("tls_too_old", at, Some(version.to_owned()))
                }
                _ => note("tls_failed", at, Some(failure.clone())),
            }
            continue;
        }
        if t.legacy_protocol() && t.lines.iter().any(|l| replied(l, "235")) {
            note("legacy_tls_in_use", at, t.tls_protocol.clone());
        }
        for line in t.lines.iter() {
            let auth = line.command.starts_with("AUTH") || line.command == "(AUTH response)";
            if auth && replied(line, "538") && t.tls_protocol.is_none() {
                note("password_before_starttls", at, None);
            } else if auth && replied(line, "535") {
                note("wrong_password", at, None);
            } else if auth && replied(line, "454") {
                note("locked_out", at, None);
            } else if line.command.starts_with("AUTH ") && replied(line, "504") {
                note(
                    "unsupported_mechanism",
                    at,
                    Some(line.command["AUTH ".len()..].to_owned()),
                );
            } else if auth && replied(line, "530") && t.listener.starts_with("legacy") {
                note("not_legacy_device", at, None);
            } else if line.command == "MAIL"
                && replied(line, "530")
                && !t.lines.iter().any(|l| l.command.starts_with("AUTH"))
            {
                note("no_login", at, None);
            }
        }
    }
    findings.sort_by(|a, b| b.count.cmp(&a.count).then(a.since.cmp(&b.since)));
    findings
}

fn replied(line: &Line, code: &str) -> bool {
    line.replies.iter().any(|r| r.starts_with(code))
}

/// The TLS version a failed handshake's reason says the client was limited to.
fn offered_only_old_tls(failure: &str) -> Option<&'static str> {
    ["TLS 1.0", "TLS 1.1", "SSL 3.0"]
        .into_iter()
        .find(|v| failure.contains(&format!("offered at most {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(
        listener: &str,
        tls: Option<&str>,
        failure: Option<&str>,
        lines: &[(&str, &[&str])],
    ) -> StoredTranscript {
        StoredTranscript {
            id: 1,
            device_id: None,
            source_addr: "192.0.2.7/32".parse().unwrap(),
            started_at: Utc::now(),
            ended_at: Utc::now(),
            listener: listener.to_owned(),
            tls_protocol: tls.map(str::to_owned),
            tls_cipher: None,
            tls_failure: failure.map(str::to_owned),
            outcome: "quit".to_owned(),
            lines: Json(
                lines
                    .iter()
                    .map(|(c, r)| Line {
                        at_ms: 0,
                        command: (*c).to_owned(),
                        replies: r.iter().map(|r| (*r).to_owned()).collect(),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn replies_are_read_without_their_text_and_continuations() {
        assert_eq!(
            reply_codes(b"250-mx.example\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"),
            ["250"]
        );
        assert_eq!(
            reply_codes(b"535 5.7.8 Authentication credentials invalid\r\n"),
            ["535 5.7.8"]
        );
        assert_eq!(reply_codes(b"354 Start mail input\r\n"), ["354"]);
        assert_eq!(reply_codes(b"334 VXNlcm5hbWU6\r\n"), ["334"]);
    }

    #[test]
    fn commands_keep_the_verb_and_the_mechanism_never_a_payload() {
        assert_eq!(command_of(b"ehlo printer.local\r\n"), "EHLO");
        assert_eq!(command_of(b"AUTH PLAIN AHNjYW4Ac2VjcmV0\r\n"), "AUTH PLAIN");
        assert_eq!(command_of(b"auth cram-md5\r\n"), "AUTH CRAM-MD5");
        assert_eq!(command_of(b"MAIL FROM:<a@b.example>\r\n"), "MAIL");
        assert_eq!(command_of(b"\x01\x02\r\n"), "(unreadable)");
    }

    #[test]
    fn the_diagnosis_names_what_went_wrong() {
        let old = stored(
            "submission",
            None,
            Some("no shared protocol version: the client offered at most TLS 1.0"),
            &[],
        );
        let wrong = stored(
            "submission",
            Some("TLSv1.3"),
            None,
            &[
                ("EHLO", &["250"]),
                ("AUTH LOGIN", &["334"]),
                ("(AUTH response)", &["334"]),
                ("(AUTH response)", &["535 5.7.8"]),
            ],
        );
        let clear = stored("submission", None, None, &[("AUTH PLAIN", &["538 5.7.11"])]);
        let cram = stored(
            "submission",
            Some("TLSv1.2"),
            None,
            &[("AUTH CRAM-MD5", &["504 5.5.4"])],
        );
        let findings = diagnose(&[old, wrong.clone(), wrong, clear, cram]);
        let keys: Vec<_> = findings.iter().map(|f| (f.key, f.count)).collect();
        assert_eq!(
            keys,
            [
                ("wrong_password", 2),
                ("tls_too_old", 1),
                ("password_before_starttls", 1),
                ("unsupported_mechanism", 1)
            ]
        );
        assert!(findings[1].text(Lang::En).contains("offers only TLS 1.0"));
        assert!(
            findings[0]
                .text(Lang::De)
                .starts_with("Falsches Passwort, 2-mal seit")
        );
        assert!(findings[3].text(Lang::En).contains("AUTH CRAM-MD5"));
        assert!(
            findings[0]
                .text(Lang::En)
                .starts_with("Wrong password 2 times since")
        );
        assert!(findings[2].text(Lang::En).contains("(once since"));
        assert!(findings[2].text(Lang::De).contains("(einmal seit"));
        assert!(
            diagnose(&[stored(
                "submission",
                Some("TLSv1.3"),
                None,
                &[("AUTH PLAIN", &["235 2.7.0"])]
            )])
            .is_empty()
        );
    }
}
