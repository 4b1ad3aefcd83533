//! Reading a non-delivery report (NDR): a `multipart/report;
//! report-type=delivery-status` message (RFC 6522) whose `message/delivery-status`
//! part (RFC 3464) says, per recipient, `Action: failed`, the enhanced `Status` and
//! the `Diagnostic-Code`, and whose `text/rfc822-headers` (or `message/rfc822`) part
//! carries the original message's header section — its Message-ID names the message
//! the report is about. Exchange Online sends them as `Undeliverable: <subject>`.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// What one report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The Message-ID of the message that bounced (without angle brackets).
    pub original_message_id: String,
    pub failed: Vec<FailedRecipient>,
}

/// One recipient the report gives up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    pub recipient: String,
    /// The enhanced status code, e.g. `5.1.10`.
    pub status: String,
    /// E.g. `smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found …`.
    pub diagnostic_code: Option<String>,
}

/// Whether a message's subject or sender suggests an NDR (checked before its
/// content is fetched, to keep the Graph requests few).
pub fn looks_like_report(subject: &str, from: &str) -> bool {
    let subject = subject.trim_start().to_ascii_lowercase();
    let from = from.to_ascii_lowercase();
    [
        "undeliverable:",
        "unzustellbar:",
        "nicht zustellbar:",
        "delivery status notification",
    ]
    .iter()
    .any(|p| subject.starts_with(p))
        || from.starts_with("microsoftexchange")
        || from.starts_with("postmaster@")
        || from.starts_with("mailer-daemon@")
}

/// The report in `mime`, if it is one that names failed recipients and the
/// original Message-ID.
pub fn parse(mime: &[u8]) -> Option<Report> {
    let message = MessageParser::default().parse(mime)?;
    let mut failed = Vec::new();
    let mut original = None;
    for part in &message.parts {
        let Some(content_type) = part.content_type() else {
            continue;
        };
        let ctype = content_type.ctype().to_ascii_lowercase();
        let subtype = content_type
            .subtype()
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match (ctype.as_str(), subtype.as_str()) {
            ("message", "delivery-status") | ("message", "global-delivery-status") => {
                failed.extend(delivery_status(&String::from_utf8_lossy(part.contents())));
            }
            ("text", "rfc822-headers") | ("message", "global-headers") if original.is_none() => {
                original = mailbridge_core::message_id::find(part.contents());
            }
            ("message", "rfc822") | ("message", "global") if original.is_none() => {
                original = match &part.body {
                    PartType::Message(m) => m.message_id().map(str::to_owned),
                    _ => mailbridge_core::message_id::find(part.contents()),
                };
            }
            _ => {}
        }
    }
    let original_message_id = mailbridge_core::message_id::normalize(&original?)?;
    (!failed.is_empty()).then_some(Report {
        original_message_id,
        failed,
    })
}

/// The failed recipients of a `message/delivery-status` body: groups of fields
/// separated by blank lines, the first about the message, the others one per
/// recipient; folded lines unfolded.
fn delivery_status(text: &str) -> Vec<FailedRecipient> {
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
            }
            continue;
        }
        let group = groups.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let field = |group: &[(String, String)], name: &str| {
        group
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    groups
        .iter()
        .filter_map(|group| {
            let recipient =
                field(group, "final-recipient").or_else(|| field(group, "original-recipient"))?;
            let action = field(group, "action")?;
            if !action.eq_ignore_ascii_case("failed") {
                return None;
            }
            let address = recipient
                .split_once(';')
                .map_or(recipient.as_str(), |(_, a)| a)
                .trim()
                .trim_matches(['<', '>'])
                .to_ascii_lowercase();
            let status = field(group, "status")?
                .split_whitespace()
                .next()?
                .to_owned();
            Some(FailedRecipient {
                recipient: address,
                status,
                diagnostic_code: field(group, "diagnostic-code"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCHANGE_NDR: &str = "From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@praxis.example>\r\n\
To: <scanner@praxis.example>\r\n\
Subject: Undeliverable: Befund\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=\"us-ascii\"\r\n\
\r\n\
Delivery has failed to these recipients or groups:\r\n\
\r\n\
--b1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns;AM0PR01MB0001.eurprd01.prod.outlook.com\r\n\
Received-From-MTA: dns;AM0PR01MB0001.eurprd01.prod.outlook.com\r\n\
\r\n\
Final-Recipient: rfc822;Nobody@Praxis.example\r\n\
Action: failed\r\n\
Status: 5.1.10\r\n\
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not\r\n\
\x20found by SMTP address lookup\r\n\
\r\n\
Final-Recipient: rfc822;ok@praxis.example\r\n\
Action: delivered\r\n\
Status: 2.0.0\r\n\
\r\n\
--b1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: scanner@praxis.example\r\n\
Message-ID: <0af3@relay.example>\r\n\
Subject: Befund\r\n\
\r\n\
--b1--\r\n";

    #[test]
    fn an_exchange_ndr_names_the_failed_recipient_and_the_original_message() {
        let report = parse(EXCHANGE_NDR.as_bytes()).expect("a report");
        assert_eq!(report.original_message_id, "0af3@relay.example");
        assert_eq!(
            report.failed,
            vec![FailedRecipient {
                recipient: "nobody@praxis.example".into(),
                status: "5.1.10".into(),
                diagnostic_code: Some(
                    "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup".into()
                ),
            }]
        );
        assert!(looks_like_report(
            "Undeliverable: Befund",
            "MicrosoftExchange329e@praxis.example"
        ));
        assert!(!looks_like_report("Befund", "arzt@praxis.example"));
    }

    #[test]
    fn a_message_without_a_delivery_status_is_no_report() {
        assert_eq!(
            parse(b"From: a@x\r\nSubject: Undeliverable: x\r\nMessage-ID: <m@x>\r\n\r\nhello\r\n"),
            None
        );
        let without_original = EXCHANGE_NDR.replace("Message-ID: <0af3@relay.example>\r\n", "");
        assert_eq!(parse(without_original.as_bytes()), None);
    }
}
