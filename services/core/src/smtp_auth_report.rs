//! Reading the files an MSP brings to the migration board, with no database and no
//! I/O: the CSV export of Exchange Online's *SMTP AUTH clients report* (its summary
//! and its details view) and the CSV written by the read-only PowerShell snippet
//! that lists mailboxes with SMTP AUTH enabled (the exposure list).
//!
//! Microsoft documents the report's columns (Sender address, Domain, TLS 1.0/1.1/1.2
//! (%), Messages sent and, since October 2024, Authentication protocol) but not the
//! exact header text of the export, and technicians often open the file in Excel and
//! save it again. So the reader is tolerant of what Excel does — a UTF-8 or UTF-16
//! byte-order mark, Windows-1252 text, a `sep=` line, `;`, `,` or tab as delimiter,
//! any column order, English or German column names, German number and date
//! formats — and strict about content: a file without the columns it needs is
//! refused with a message naming what was expected and what was found, and a row
//! with a value it cannot read is refused with its row number. Nothing is ever
//! taken from a file that is refused.
//!
//! Over 500 lines: about 140 of them are unit tests of the parser; the rest is one
//! parser — column names, decoding, delimiters, number and date formats — whose helpers
//! are private to it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

/// The largest file accepted (a 90-day details export of a big tenant is a few MB).
pub const MAX_FILE_BYTES: usize = 20 * 1024 * 1024;

/// Which file this was.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "lowercase")]
pub enum ReportKind {
    /// The report's main table: one row per sender over the chosen period.
    Summary,
    /// The details view: one row per sender and day.
    Details,
    /// The PowerShell snippet's list of mailboxes with SMTP AUTH enabled.
    Exposure,
    /// The customer's Entra sign-in log ("Authenticated SMTP"), read through Graph.
    #[strum(serialize = "signins")]
    SignIns,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How an account authenticated, as the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Basic,
    OAuth,
    /// An export without the Authentication protocol column (before October 2024):
    /// treated as Basic on the board, since nothing shows otherwise.
    Unknown,
}

/// What the file says about one account, all its rows together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountUse {
    /// The sender address, lower case.
    pub account: String,
    pub basic_messages: i64,
    pub oauth_messages: i64,
    /// Messages of rows without a protocol.
    pub unknown_messages: i64,
    /// The first and last day with use (details view only).
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// The last day with Basic (or unknown) use (details view only).
    pub last_basic: Option<DateTime<Utc>>,
    /// Client addresses or names, where the file has them.
    pub sources: Vec<String>,
}

impl AccountUse {
    /// Whether the file shows this account sending with Basic authentication (or
    /// with no protocol stated, which cannot be told apart from it).
    pub fn uses_basic(&self) -> bool {
        self.basic_messages > 0 || self.unknown_messages > 0
    }
}

/// One mailbox of the exposure list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposure {
    pub account: String,
    /// Whether SMTP AUTH is in effect for it (the mailbox's own setting, or the
    /// organisation's when the mailbox's is empty).
    pub smtp_auth_enabled: bool,
}

/// A file read in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedReport {
    pub kind: ReportKind,
    /// Data rows read.
    pub rows: usize,
    /// Whether the file had the Authentication protocol column.
    pub has_protocol: bool,
    /// Per account, sorted by address (report kinds).
    pub accounts: Vec<AccountUse>,
    /// Per mailbox (exposure list).
    pub exposures: Vec<Exposure>,
}

/// Why a file was refused. The text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("The file is empty.")]
    Empty,
    #[error("The file is larger than {} MB; export a shorter period.", MAX_FILE_BYTES / 1024 / 1024)]
    TooLarge,
    #[error(
        "This is not an SMTP AUTH clients report. Expected the CSV exported from the Exchange admin center (Reports → Mail flow → SMTP AUTH clients report, summary or details view) with the columns \"Sender address\" and \"Messages sent\" (and, since October 2024, \"Authentication protocol\"), or the CSV of mailbridge's PowerShell snippet with \"PrimarySmtpAddress\" and \"SmtpAuthEnabled\". Columns found: {found}."
    )]
    NotAReport { found: String },
    /// A row with a value that cannot be read: `problem` has a `{}` for the value.
    #[error("Row {row}: {}", problem.replacen("{}", value, 1))]
    Row {
        row: usize,
        problem: &'static str,
        value: String,
    },
    #[error("The file is not readable as CSV: {0}")]
    Csv(String),
}

/// The columns the reader knows, by their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    Sender,
    Messages,
    Protocol,
    Date,
    ClientIp,
    ClientName,
    /// Exposure list: the effective SMTP AUTH state.
    SmtpAuthEnabled,
}

/// A header cell reduced to lower-case letters and digits (`TLS 1.0 (%)` → `tls10`).
fn normalise(header: &str) -> String {
    header
        .trim()
        .trim_matches('"')
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'ä' => 'a',
            'ö' => 'o',
            'ü' => 'u',
            other => other,
        })
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// English and German names of each column (normalised).
fn column_of(normalised: &str) -> Option<Column> {
    Some(match normalised {
        "senderaddress"
        | "sender"
        | "senderemailaddress"
        | "absenderadresse"
        | "absender"
        | "absenderemailadresse"
        | "primarysmtpaddress"
        | "userprincipalname"
        | "mailbox"
        | "postfach" => Column::Sender,
        "messagessent"
        | "messages"
        | "messagecount"
        | "sentmessages"
        | "gesendetenachrichten"
        | "nachrichtengesendet"
        | "anzahlgesendeternachrichten"
        | "nachrichten"
        | "anzahlnachrichten" => Column::Messages,
        "authenticationprotocol"
        | "authprotocol"
        | "authenticationmethod"
        | "protocol"
        | "authentifizierungsprotokoll"
        | "authentifizierungsmethode"
        | "protokoll" => Column::Protocol,
        "date" | "day" | "datum" | "tag" => Column::Date,
        "clientip" | "clientipaddress" | "ipaddress" | "sourceip" | "clientipadresse"
        | "ipadresse" => Column::ClientIp,
        "clientname" | "client" | "clientapp" | "clientanwendung" => Column::ClientName,
        "smtpauthenabled" | "smtpauthaktiviert" => Column::SmtpAuthEnabled,
        _ => return None,
    })
}

/// Decodes the bytes as text: UTF-8 (with or without BOM), UTF-16 with a BOM (Excel's
/// "Unicode text"), else Windows-1252 (Excel's "CSV" on a German Windows).
fn decode(bytes: &[u8]) -> String {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _, _) = encoding.decode(bytes);
        return text.into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
    }
}

/// The delimiter of the header line: the most frequent of `;`, `,` and tab outside
/// quotes.
fn delimiter_of(header: &str) -> u8 {
    let mut counts = [(b';', 0usize), (b',', 0), (b'\t', 0)];
    let mut quoted = false;
    for b in header.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(entry) = counts.iter_mut().find(|(d, _)| *d == b) {
            entry.1 += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(d, n)| (*n, *d == b','))
        .map(|(d, _)| d)
        .unwrap_or(b',')
}

/// A message count: `1234`, `1.234`, `1,234`, `1 234` (thousands separators of either
/// language; a report counts whole messages).
fn parse_count(text: &str) -> Option<i64> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, '.' | ',' | ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_protocol(text: &str) -> Option<Protocol> {
    match normalise(text).as_str() {
        "" => Some(Protocol::Unknown),
        "basic"
        | "basicauth"
        | "basicauthentication"
        | "standard"
        | "einfach"
        | "standardauthentifizierung"
        | "basisauthentifizierung"
        | "legacy" => Some(Protocol::Basic),
        "oauth"
        | "oauth2"
        | "oauth20"
        | "modernauth"
        | "modern"
        | "modernauthentication"
        | "moderneauthentifizierung" => Some(Protocol::OAuth),
        _ => None,
    }
}

/// A day or time as the export or Excel writes it, in UTC: ISO 8601 with or without
/// time, US `M/D/YYYY`, German `DD.MM.YYYY`, each optionally with a time.
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    const TIMES: [&str; 8] = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %I:%M:%S %p",
        "%m/%d/%Y %H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
    ];
    for format in TIMES {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&at));
        }
    }
    for format in ["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%d.%m.%y"] {
        if let Ok(day) = NaiveDate::parse_from_str(text, format) {
            return day
                .and_hms_opt(0, 0, 0)
                .map(|at| Utc.from_utc_datetime(&at));
        }
    }
    None
}

fn parse_flag(text: &str) -> Option<bool> {
    match normalise(text).as_str() {
        "true" | "yes" | "enabled" | "wahr" | "ja" | "aktiviert" | "1" => Some(true),
        "false" | "no" | "disabled" | "falsch" | "nein" | "deaktiviert" | "0" => Some(false),
        _ => None,
    }
}

/// An address as the board keys it, or why it is not one.
fn account_of(text: &str) -> Option<String> {
    let account = text.trim().to_lowercase();
    let (local, domain) = account.rsplit_once('@')?;
    (!local.is_empty()
        && domain.contains('.')
        && !account.chars().any(|c| c.is_whitespace() || c == ','))
    .then_some(account)
}

/// Reads a whole file; refuses it at the first thing it cannot read.
pub fn parse(bytes: &[u8]) -> Result<ParsedReport, ReportError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReportError::TooLarge);
    }
    let text = decode(bytes);
    let text = text.trim_start_matches('\u{feff}');
    // Excel's hint line `sep=;` comes before the header.
    let mut lines = text.splitn(2, '\n');
    let first = lines.next().unwrap_or_default();
    let (forced, body) = match first.trim().strip_prefix("sep=") {
        Some(sep) if sep.len() == 1 => (Some(sep.as_bytes()[0]), lines.next().unwrap_or("")),
        _ => (None, text),
    };
    let header_line = body.lines().find(|l| !l.trim().is_empty());
    let Some(header_line) = header_line else {
        return Err(ReportError::Empty);
    };
    let delimiter = forced.unwrap_or_else(|| delimiter_of(header_line));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ReportError::Csv(e.to_string()))?
        .clone();
    let mut columns: BTreeMap<Column, usize> = BTreeMap::new();
    for (index, header) in headers.iter().enumerate() {
        if let Some(column) = column_of(&normalise(header)) {
            columns.entry(column).or_insert(index);
        }
    }
    let found = || {
        let names: Vec<String> = headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| format!("\"{}\"", h.trim()))
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let has = |c: Column| columns.contains_key(&c);
    let kind = if has(Column::Sender) && has(Column::Messages) {
        if has(Column::Date) {
            ReportKind::Details
        } else {
            ReportKind::Summary
        }
    } else if has(Column::Sender) && has(Column::SmtpAuthEnabled) {
        ReportKind::Exposure
    } else {
        return Err(ReportError::NotAReport { found: found() });
    };

    let mut accounts: BTreeMap<String, AccountUse> = BTreeMap::new();
    let mut exposures: BTreeMap<String, Exposure> = BTreeMap::new();
    let mut rows = 0;
    for (index, record) in reader.records().enumerate() {
        // Row 1 is the header.
        let row = index + 2;
        let record = record.map_err(|e| ReportError::Row {
            row,
            problem: "The line cannot be read as CSV: {}",
            value: e.to_string(),
        })?;
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        let cell = |c: Column| {
            columns
                .get(&c)
                .and_then(|i| record.get(*i))
                .unwrap_or("")
                .trim()
        };
        let bad = |problem: &'static str, value: &str| ReportError::Row {
            row,
            problem,
            value: value.to_owned(),
        };
        let account = account_of(cell(Column::Sender)).ok_or_else(|| {
            bad(
                "\"{}\" in the sender column is not an email address.",
                cell(Column::Sender),
            )
        })?;
        rows += 1;
        if kind == ReportKind::Exposure {
            let enabled = parse_flag(cell(Column::SmtpAuthEnabled)).ok_or_else(|| {
                bad(
                    "\"{}\" in the column SmtpAuthEnabled is not True or False.",
                    cell(Column::SmtpAuthEnabled),
                )
            })?;
            exposures.insert(
                account.clone(),
                Exposure {
                    account,
                    smtp_auth_enabled: enabled,
                },
            );
            continue;
        }
        let messages = parse_count(cell(Column::Messages)).ok_or_else(|| {
            bad(
                "\"{}\" in the messages column is not a number of messages.",
                cell(Column::Messages),
            )
        })?;
        let protocol = parse_protocol(cell(Column::Protocol)).ok_or_else(|| {
            bad(
                "\"{}\" is not an authentication protocol (expected Basic or OAuth).",
                cell(Column::Protocol),
            )
        })?;
        let day = if kind == ReportKind::Details {
            Some(parse_date(cell(Column::Date)).ok_or_else(|| {
                bad(
                    "\"{}\" is not a date (expected e.g. 2026-11-30, 11/30/2026 or 30.11.2026).",
                    cell(Column::Date),
                )
            })?)
        } else {
            None
        };
        let entry = accounts
            .entry(account.clone())
            .or_insert_with(|| AccountUse {
                account,
                basic_messages: 0,
                oauth_messages: 0,
                unknown_messages: 0,
                first_seen: None,
                last_seen: None,
                last_basic: None,
                sources: Vec::new(),
            });
        match protocol {
            Protocol::Basic => entry.basic_messages += messages,
            Protocol::OAuth => entry.oauth_messages += messages,
            Protocol::Unknown => entry.unknown_messages += messages,
        }
        if let Some(day) = day {
            entry.first_seen = Some(entry.first_seen.map_or(day, |d| d.min(day)));
            entry.last_seen = Some(entry.last_seen.map_or(day, |d| d.max(day)));
            if protocol != Protocol::OAuth && messages > 0 {
                entry.last_basic = Some(entry.last_basic.map_or(day, |d| d.max(day)));
            }
        }
        for source in [cell(Column::ClientIp), cell(Column::ClientName)] {
            if !source.is_empty() && !entry.sources.iter().any(|s| s == source) {
                entry.sources.push(source.to_owned());
            }
        }
    }
    Ok(ParsedReport {
        kind,
        rows,
        has_protocol: has(Column::Protocol),
        accounts: accounts.into_values().collect(),
        exposures: exposures.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "Sender address,Domain,TLS 1.0 (%),TLS 1.1 (%),TLS 1.2 (%),Messages sent,Authentication protocol\r\n\
scanner@praxis.example,praxis.example,100,0,0,412,Basic\r\n\
fax@praxis.example,praxis.example,0,0,100,\"1,204\",Basic\r\n\
app@praxis.example,praxis.example,0,0,100,80,OAuth\r\n";

    #[test]
    fn reads_the_summary_export() {
        let report = parse(SUMMARY.as_bytes()).unwrap();
        assert_eq!(report.kind, ReportKind::Summary);
        assert_eq!(report.rows, 3);
        assert!(report.has_protocol);
        let fax = &report.accounts[1];
        assert_eq!(fax.account, "fax@praxis.example");
        assert_eq!(fax.basic_messages, 1204);
        assert!(fax.uses_basic());
        assert!(!report.accounts[0].uses_basic(), "app uses OAuth only");
    }

    #[test]
    fn reads_a_german_excel_details_export_with_bom_and_semicolons() {
        let text = "\u{feff}sep=;\r\nDatum;Gesendete Nachrichten;Absenderadresse;Authentifizierungsprotokoll;Client-IP-Adresse\r\n\
28.11.2026;1.250;Scanner@Praxis.example;Basic;192.0.2.10\r\n\
30.11.2026;3;scanner@praxis.example;Basic;192.0.2.11\r\n\
29.11.2026;7;scanner@praxis.example;OAuth;\r\n";
        let report = parse(text.as_bytes()).unwrap();
        assert_eq!(report.kind, ReportKind::Details);
        let scanner = &report.accounts[0];
        assert_eq!(scanner.basic_messages, 1253);
        assert_eq!(scanner.oauth_messages, 7);
        assert_eq!(
            scanner.first_seen.unwrap().to_string(),
            "2026-11-28 00:00:00 UTC"
        );
        assert_eq!(
            scanner.last_seen.unwrap().to_string(),
            "2026-11-30 00:00:00 UTC"
        );
        assert_eq!(scanner.sources, ["192.0.2.10", "192.0.2.11"]);
    }

    #[test]
    fn reads_windows_1252_and_utf16() {
        let mut latin: Vec<u8> = b"Absenderadresse;Dom".to_vec();
        latin.push(0xE4); // ä in Windows-1252
        latin.extend_from_slice(b"ne;Gesendete Nachrichten\r\nfax@m\xfcller.example;x;5\r\n");
        let report = parse(&latin).unwrap();
        assert_eq!(report.accounts[0].account, "fax@müller.example");
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "Sender address\tMessages sent\nfax@p.example\t2\n".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        let report = parse(&utf16).unwrap();
        assert_eq!(report.accounts[0].unknown_messages, 2);
        assert!(!report.has_protocol);
    }

    #[test]
    fn refuses_other_files_saying_what_was_expected() {
        let err = parse(b"Name,Email,Phone\nA,a@b.example,1\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Sender address") && text.contains("\"Email\""),
            "{text}"
        );
        assert_eq!(parse(b"").unwrap_err(), ReportError::Empty);
        assert_eq!(parse(b"\xef\xbb\xbf\r\n").unwrap_err(), ReportError::Empty);
    }

    #[test]
    fn refuses_a_bad_row_naming_it() {
        let text = format!("{SUMMARY}printer@praxis.example,praxis.example,0,0,100,many,Basic\n");
        assert_eq!(
            parse(text.as_bytes()).unwrap_err(),
            ReportError::Row {
                row: 5,
                problem: "\"{}\" in the messages column is not a number of messages.",
                value: "many".into()
            }
        );
        let text = format!("{SUMMARY}not-an-address,x,0,0,100,1,Basic\n");
        assert!(matches!(
            parse(text.as_bytes()),
            Err(ReportError::Row { row: 5, .. })
        ));
        let text = format!("{SUMMARY}a@praxis.example,x,0,0,100,1,Kerberos\n");
        assert!(
            parse(text.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("Kerberos")
        );
        let text = "Date,Sender address,Messages sent\nyesterday,a@b.example,1\n";
        assert!(
            parse(text.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("not a date")
        );
    }

    #[test]
    fn reads_the_exposure_list() {
        let text = "\"PrimarySmtpAddress\",\"SmtpClientAuthenticationDisabled\",\"OrganizationSmtpClientAuthenticationDisabled\",\"SmtpAuthEnabled\"\r\n\
\"info@praxis.example\",\"\",\"False\",\"True\"\r\n\
\"chef@praxis.example\",\"True\",\"False\",\"False\"\r\n";
        let report = parse(text.as_bytes()).unwrap();
        assert_eq!(report.kind, ReportKind::Exposure);
        assert_eq!(
            report.exposures,
            [
                Exposure {
                    account: "chef@praxis.example".into(),
                    smtp_auth_enabled: false
                },
                Exposure {
                    account: "info@praxis.example".into(),
                    smtp_auth_enabled: true
                },
            ]
        );
    }

    #[test]
    fn counts_and_dates_in_both_languages() {
        assert_eq!(parse_count("1.234"), Some(1234));
        assert_eq!(parse_count("1\u{a0}234"), Some(1234));
        assert_eq!(parse_count("-3"), None);
        assert_eq!(parse_count(""), None);
        assert!(parse_date("11/30/2026").is_some());
        assert!(parse_date("2026-11-30T00:00:00Z").is_some());
        assert!(parse_date("30.11.2026 13:05").is_some());
        assert!(parse_date("31.02.2026").is_none());
    }
}
