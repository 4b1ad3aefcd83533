//! Alert e-mails: when an alert opens or resolves, a short message in German and
//! English goes to the MSP's alert address through mailbridge's own delivery path —
//! queued like the reports of undeliverable messages, as the sender mailbox of the
//! customer the MSP chose for it (its own tenant, typically). Without a chosen
//! customer, an alert about one customer is sent through that customer's path
//! (except a refused token, whose path is the one that is broken); MSP-wide alerts
//! then go by webhook only.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{
    alerts::{Alert, Channels, Kind},
    queue::{self, MessageKind, NewMessage},
    webhooks::Event,
};

/// Queues the e-mail of `event` about `alert` in `tx`, if there is an address and
/// a path for it.
pub(crate) async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    channels: &Channels,
    alert: &Alert,
    event: &Event,
) -> Result<(), sqlx::Error> {
    let (to, chosen): (Option<String>, Option<Uuid>) =
        sqlx::query_as("SELECT email_to, email_tenant_id FROM alert_settings")
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or_default();
    let Some(to) = to.or_else(|| channels.fallback_email.clone()) else {
        return Ok(());
    };
    let via = chosen.or(alert
        .tenant_id
        .filter(|_| alert.kind() != Some(Kind::CustomerToken)));
    let Some(via) = via else {
        return Ok(());
    };
    let Some(sender) = sqlx::query_scalar::<_, String>(
        "SELECT sender_mailbox FROM tenants WHERE id = $1 AND entra_tenant_id IS NOT NULL",
    )
    .bind(via)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(());
    };
    let id = Uuid::now_v7();
    let resolved = alert.resolved_at.is_some();
    let subject = format!(
        "[mailbridge] {}{} / {}",
        if resolved { "Behoben / Resolved: " } else { "" },
        alert.title(true),
        alert.title(false)
    );
    let about = match (alert.customer_name(), alert.device_name()) {
        (Some(c), Some(d)) => format!("{c} · {d}"),
        (Some(c), None) => c,
        _ => "mailbridge".to_owned(),
    };
    let link = &event.payload.links.alert;
    let text = format!(
        "{state_de}: {title_de}\r\n{about}\r\n\r\n{text_de}\r\n\r\nGeöffnet: {opened}\r\n{link}\r\n\r\n----\r\n\r\n\
         {state_en}: {title_en}\r\n{about}\r\n\r\n{text_en}\r\n\r\nOpened: {opened}\r\n{link}\r\n",
        state_de = if resolved { "Behoben" } else { "Neue Warnung" },
        state_en = if resolved { "Resolved" } else { "New alert" },
        title_de = alert.title(true),
        title_en = alert.title(false),
        text_de = alert.text(true),
        text_en = alert.text(false),
        opened = alert.opened_at.format("%Y-%m-%d %H:%M UTC"),
    );
    let body = format!(
        "From: mailbridge <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <{id}@mailbridge>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}",
        subject = encoded_word(&subject),
        date = chrono::Utc::now().to_rfc2822(),
        id = id.simple(),
    );
    let message = NewMessage {
        id,
        tenant_id: via,
        device_id: None,
        mail_from: sender,
        rcpt_to: vec![to],
        client_addr: std::net::IpAddr::from([127, 0, 0, 1]),
        tls_protocol: None,
        tls_cipher: None,
        kind: MessageKind::Notification,
        subject: Some(subject),
        body: body.into_bytes(),
    };
    queue::enqueue_all(&mut **tx, &channels.key, &[&message]).await
}

/// A header value as an RFC 2047 encoded word when it is not plain ASCII.
fn encoded_word(text: &str) -> String {
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
