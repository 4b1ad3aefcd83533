//! Reports of undeliverable messages. When a device's message fails for good — or
//! Microsoft accepted it and later sent back a non-delivery report — a short report (in English and German: what failed, Microsoft's answer, what to do) goes to
//! the tenant's notification address — or the MSP's, configured once — through the
//! same tenant's delivery path. Never to an address taken from the message itself,
//! never with the message's content (health data), and never about a report.

use mailbridge_core::{
    Settings,
    crypto::MasterKey,
    diagnosis::Lang,
    queue::{self, LeasedMessage, MessageKind, NewMessage},
    tenants,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::outcome::Failure;

/// Queues the report for `message`, if its tenant (or the MSP) has an address for it.
pub async fn report_undeliverable(
    pool: &PgPool,
    settings: &Settings,
    key: &MasterKey,
    message: &LeasedMessage,
    failure: &Failure,
    expired: bool,
) -> Result<(), sqlx::Error> {
    let why = if expired { Why::Expired } else { Why::Failed };
    report(pool, settings, key, message, failure, why).await
}

/// Why the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Failed,
    Expired,
    /// Microsoft accepted the message, then reported a recipient undeliverable.
    Bounced,
}

/// Queues the report that Microsoft bounced `message` (`failure`: the recipient's
/// code and diagnosis).
pub async fn report_bounced(
    pool: &PgPool,
    settings: &Settings,
    key: &MasterKey,
    message: &LeasedMessage,
    failure: &Failure,
) -> Result<(), sqlx::Error> {
    report(pool, settings, key, message, failure, Why::Bounced).await
}

async fn report(
    pool: &PgPool,
    settings: &Settings,
    key: &MasterKey,
    message: &LeasedMessage,
    failure: &Failure,
    why: Why,
) -> Result<(), sqlx::Error> {
    let Some(tenant) = tenants::get(pool, message.tenant_id).await? else {
        return Ok(());
    };
    let Some(recipient) = tenant
        .notification_address
        .clone()
        .or_else(|| settings.worker.failure_notification_address.clone())
    else {
        return Ok(());
    };
    let device: Option<String> = match message.device_id {
        Some(id) => {
            sqlx::query_scalar("SELECT name FROM devices WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }
        None => None,
    };
    let id = Uuid::now_v7();
    let subject = format!(
        "Nicht zustellbar / Undeliverable: {}",
        message
            .subject
            .as_deref()
            .unwrap_or("(ohne Betreff / no subject)")
    );
    let body = render(&ReportInput {
        id,
        from: &tenant.sender_mailbox,
        to: &recipient,
        subject: &subject,
        message,
        device: device.as_deref(),
        failure,
        why,
    });
    let report = NewMessage {
        id,
        tenant_id: tenant.id,
        device_id: None,
        mail_from: tenant.sender_mailbox.clone(),
        rcpt_to: vec![recipient],
        client_addr: std::net::IpAddr::from([127, 0, 0, 1]),
        tls_protocol: None,
        tls_cipher: None,
        kind: MessageKind::Notification,
        subject: Some(subject),
        body,
    };
    queue::enqueue(pool, key, &report).await?;
    mailbridge_core::metrics::metrics()
        .worker
        .notifications
        .inc();
    Ok(())
}

struct ReportInput<'a> {
    id: Uuid,
    from: &'a str,
    to: &'a str,
    subject: &'a str,
    message: &'a LeasedMessage,
    device: Option<&'a str>,
    failure: &'a Failure,
    why: Why,
}

/// Encodes a header value as an RFC 2047 encoded word when it is not plain ASCII.
fn header_text(text: &str) -> String {
    use base64::Engine;
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

fn render(input: &ReportInput<'_>) -> Vec<u8> {
    let m = input.message;
    let f = input.failure;
    let device = input.device.unwrap_or("—");
    let answer = format!(
        "{} {}",
        f.status.map(|s| s.to_string()).unwrap_or_default(),
        f.message
    )
    .trim()
    .to_owned();
    let (expired_de, expired_en) = if input.why == Why::Expired {
        (
            "Die Nachricht konnte innerhalb ihrer Höchstdauer nicht zugestellt werden.\r\n",
            "The message could not be delivered within its maximum age.\r\n",
        )
    } else {
        ("", "")
    };
    let (what_de, what_en) = if input.why == Why::Bounced {
        (
            "Microsoft 365 hat eine Nachricht angenommen, konnte sie aber nicht zustellen (Unzustellbarkeitsbericht).",
            "Microsoft 365 accepted a message but could not deliver it (non-delivery report).",
        )
    } else {
        (
            "Eine Nachricht konnte nicht an Microsoft 365 übergeben werden.",
            "A message could not be handed to Microsoft 365.",
        )
    };
    let text = format!(
        "{what_de}\r\n\
         {expired_de}\r\n\
         Gerät:       {device}\r\n\
         Empfangen:   {received}\r\n\
         Absender:    {sender}\r\n\
         Empfänger:   {rcpts}\r\n\
         Warteschl.:  {queue}\r\n\r\n\
         Ursache:     {title_de}\r\n\
         Was tun:     {fix_de}\r\n\
         Antwort:     {answer}\r\n\r\n\
         ----\r\n\r\n\
         {what_en}\r\n\
         {expired_en}\r\n\
         Device:      {device}\r\n\
         Received:    {received}\r\n\
         Sender:      {sender}\r\n\
         Recipients:  {rcpts}\r\n\
         Queue id:    {queue}\r\n\r\n\
         Cause:       {title_en}\r\n\
         What to do:  {fix_en}\r\n\
         Answer:      {answer}\r\n\r\n\
         The message's content is not included.\r\n",
        received = m.received_at.format("%Y-%m-%d %H:%M:%S UTC"),
        sender = m.mail_from,
        rcpts = m.rcpt_to.join(", "),
        queue = m.id.simple(),
        title_de = f.diagnosis.title(Lang::De),
        fix_de = f.diagnosis.fix(Lang::De),
        title_en = f.diagnosis.title(Lang::En),
        fix_en = f.diagnosis.fix(Lang::En),
    );
    format!(
        "From: mailbridge <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@mailbridge>\r\n\
         Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{text}",
        from = input.from,
        to = input.to,
        subject = header_text(input.subject),
        date = chrono::Utc::now().to_rfc2822(),
        id = input.id.simple(),
    )
    .into_bytes()
}
