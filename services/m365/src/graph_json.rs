//! The JSON form of Graph `sendMail`, for customers who do not want a copy in the
//! sender mailbox's Sent Items: only this form takes `"saveToSentItems": false` (the
//! MIME form always saves). The message is read into Graph's message resource:
//! subject, body (HTML if it has one, else text), From, To, Cc, Bcc (plus envelope
//! recipients the headers do not name), Reply-To, and the attachments.

use base64::{Engine, engine::general_purpose::STANDARD};
use mail_parser::{Address, MessageParser, MimeHeaders};
use serde_json::{Value, json};

fn recipients(address: Option<&Address>) -> Vec<Value> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let address = x.address()?;
                    Some(match x.name() {
                        Some(name) => json!({"emailAddress": {"address": address, "name": name}}),
                        None => json!({"emailAddress": {"address": address}}),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `sendMail` JSON body for `mime`, not saved to Sent Items; `None` when the
/// message cannot be read.
pub fn send_mail_request(mime: &[u8], envelope: &[String]) -> Option<Vec<u8>> {
    let message = MessageParser::default().parse(mime)?;
    let to = recipients(message.to());
    let cc = recipients(message.cc());
    let mut bcc = recipients(message.bcc());
    let named: Vec<String> = [&to, &cc, &bcc]
        .iter()
        .flat_map(|list| list.iter())
        .filter_map(|r| {
            r["emailAddress"]["address"]
                .as_str()
                .map(str::to_ascii_lowercase)
        })
        .collect();
    for extra in envelope
        .iter()
        .filter(|r| !named.contains(&r.to_ascii_lowercase()))
    {
        bcc.push(json!({"emailAddress": {"address": extra}}));
    }
    let body = match (message.body_html(0), message.body_text(0)) {
        (Some(html), _) if message.html_body_count() > 0 => {
            json!({"contentType": "html", "content": html})
        }
        (_, Some(text)) => json!({"contentType": "text", "content": text}),
        _ => json!({"contentType": "text", "content": ""}),
    };
    let attachments: Vec<Value> = message
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": part.attachment_name().map(str::to_owned).unwrap_or_else(|| format!("attachment-{}", i + 1)),
                "contentType": part.content_type().map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                }).unwrap_or_else(|| "application/octet-stream".into()),
                "contentBytes": STANDARD.encode(part.contents()),
            })
        })
        .collect();
    let mut resource = json!({
        "subject": message.subject().unwrap_or_default(),
        "body": body,
        "toRecipients": to,
        "ccRecipients": cc,
        "bccRecipients": bcc,
        "replyTo": recipients(message.reply_to()),
        "attachments": attachments,
    });
    if let Some(from) = recipients(message.from()).into_iter().next() {
        resource["from"] = from;
    }
    serde_json::to_vec(&json!({"message": resource, "saveToSentItems": false})).ok()
}

#[cfg(test)]
mod tests {
    use super::send_mail_request;

    #[test]
    fn a_message_becomes_graphs_resource() {
        let mime = b"From: Scanner <s@p.example>\r\nTo: a@k.example\r\nSubject: Befund\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo\r\n";
        let json: serde_json::Value = serde_json::from_slice(
            &send_mail_request(mime, &["a@k.example".into(), "b@k.example".into()]).unwrap(),
        )
        .unwrap();
        assert_eq!(json["saveToSentItems"], false);
        assert_eq!(json["message"]["subject"], "Befund");
        assert_eq!(
            json["message"]["from"]["emailAddress"]["address"],
            "s@p.example"
        );
        assert_eq!(
            json["message"]["toRecipients"][0]["emailAddress"]["address"],
            "a@k.example"
        );
        assert_eq!(
            json["message"]["bccRecipients"][0]["emailAddress"]["address"],
            "b@k.example"
        );
        assert!(
            json["message"]["body"]["content"]
                .as_str()
                .unwrap()
                .contains("Hallo")
        );
    }
}
