//! The JSON form of Graph `sendMail` (`{"message": {…}, "saveToSentItems": bool}`),
//! rendered to the MIME message Exchange would send, so that it is stored and checked
//! like the MIME form.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMail {
    message: Message,
    #[serde(default = "yes")]
    save_to_sent_items: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default)]
    from: Option<Recipient>,
    #[serde(default)]
    to_recipients: Vec<Recipient>,
    #[serde(default)]
    cc_recipients: Vec<Recipient>,
    #[serde(default)]
    bcc_recipients: Vec<Recipient>,
    #[serde(default)]
    reply_to: Vec<Recipient>,
    #[serde(default)]
    attachments: Vec<FileAttachment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    content_type: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: EmailAddress,
}

#[derive(Deserialize)]
struct EmailAddress {
    address: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileAttachment {
    name: String,
    #[serde(default)]
    content_type: Option<String>,
    content_bytes: String,
}

fn addresses(list: &[Recipient]) -> String {
    list.iter()
        .map(|r| match &r.email_address.name {
            Some(name) if !name.is_empty() => format!(
                "\"{}\" <{}>",
                name.replace('"', ""),
                r.email_address.address
            ),
            _ => format!("<{}>", r.email_address.address),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The MIME rendering of a JSON `sendMail` body, and its `saveToSentItems`.
pub(crate) fn render(json: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let request: SendMail =
        serde_json::from_slice(json).map_err(|e| format!("Invalid sendMail request: {e}"))?;
    let m = request.message;
    let mut out = String::new();
    if let Some(from) = &m.from {
        out.push_str(&format!(
            "From: {}\r\n",
            addresses(std::slice::from_ref(from))
        ));
    }
    for (field, list) in [
        ("To", &m.to_recipients),
        ("Cc", &m.cc_recipients),
        ("Bcc", &m.bcc_recipients),
        ("Reply-To", &m.reply_to),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("{field}: {}\r\n", addresses(list)));
        }
    }
    if let Some(subject) = &m.subject {
        let encoded = if subject.is_ascii() {
            subject.clone()
        } else {
            format!("=?UTF-8?B?{}?=", STANDARD.encode(subject))
        };
        out.push_str(&format!("Subject: {encoded}\r\n"));
    }
    let body = m.body.unwrap_or(Body {
        content_type: "text".into(),
        content: String::new(),
    });
    let subtype = if body.content_type.eq_ignore_ascii_case("html") {
        "html"
    } else {
        "plain"
    };
    let boundary = "sim-json-boundary";
    out.push_str("MIME-Version: 1.0\r\n");
    if m.attachments.is_empty() {
        out.push_str(&format!("Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        out.push_str(&STANDARD.encode(body.content.as_bytes()));
        out.push_str("\r\n");
        return Ok((out.into_bytes(), request.save_to_sent_items));
    }
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n"
    ));
    out.push_str(&format!(
        "Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ));
    out.push_str(&STANDARD.encode(body.content.as_bytes()));
    out.push_str("\r\n");
    for attachment in &m.attachments {
        STANDARD
            .decode(attachment.content_bytes.as_bytes())
            .map_err(|_| "contentBytes is not valid base64".to_owned())?;
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Disposition: attachment; filename=\"{}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            attachment.content_type.as_deref().unwrap_or("application/octet-stream"),
            attachment.name,
            attachment.name,
            attachment.content_bytes
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    Ok((out.into_bytes(), request.save_to_sent_items))
}
