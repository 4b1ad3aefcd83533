//! Reports of undeliverable messages. When a device's message fails for good — or
//! Microsoft accepted it and later sent back a non-delivery report — a short report
//! (in German and English: what failed, Microsoft's answer, what to do) goes to
//! the tenant's notification address — or the MSP's, configured once — through the
//! same tenant's delivery path. Never to an address taken from the message itself,
//! never with the message's content (health data), and never about a report.

use mailbridge_core::ids::MessageId;
use mailbridge_core::{
    Settings, devices,
    i18n::{self, Lang},
    own_mail::OwnMail,
    queue::{LeasedMessage, MessageKind, NewMessage},
    tenants, tr,
};
use sqlx::PgPool;

use mailbridge_m365::outcome::Failure;

/// The report that `message` failed for good (`expired`: past its maximum age), if
/// its tenant (or the MSP) has an address for it: to be queued with the failed
/// settlement, in its transaction ([`mailbridge_core::queue::Settling::report`]).
pub async fn undeliverable(
    pool: &PgPool,
    settings: &Settings,
    message: &LeasedMessage,
    failure: &Failure,
    expired: bool,
) -> Result<Option<NewMessage>, sqlx::Error> {
    let why = if expired { Why::Expired } else { Why::Failed };
    report(pool, settings, message, failure, why).await
}

/// Why the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Failed,
    Expired,
    /// Microsoft accepted the message, then reported a recipient undeliverable.
    Bounced,
}

/// The report that Microsoft bounced `message` (`failure`: the recipient's code
/// and diagnosis), if its tenant (or the MSP) has an address for it: to be queued
/// in the transaction that records the bounce.
pub async fn bounced(
    pool: &PgPool,
    settings: &Settings,
    message: &LeasedMessage,
    failure: &Failure,
) -> Result<Option<NewMessage>, sqlx::Error> {
    report(pool, settings, message, failure, Why::Bounced).await
}

/// Writes the report about `message`; none without an address to send it to.
async fn report(
    pool: &PgPool,
    settings: &Settings,
    message: &LeasedMessage,
    failure: &Failure,
    why: Why,
) -> Result<Option<NewMessage>, sqlx::Error> {
    let Some(tenant) = tenants::get(pool, message.tenant_id).await? else {
        return Ok(None);
    };
    let Some(recipient) = tenant
        .notification_address
        .clone()
        .or_else(|| settings.worker.failure_notification_address.clone())
    else {
        return Ok(None);
    };
    let device: Option<String> = match message.device_id {
        Some(id) => devices::named(pool, message.tenant_id, &[id])
            .await?
            .into_iter()
            .next()
            .map(|device| device.name),
        None => None,
    };
    let id = MessageId::now();
    let subject = format!(
        "{}: {}",
        i18n::both(tr!("Undeliverable")),
        message
            .subject
            .as_deref()
            .map_or_else(|| i18n::both(tr!("(no subject)")), str::to_owned)
    );
    let mail = OwnMail {
        id,
        host: &settings.edge.hostname,
        from: &tenant.sender_mailbox,
        from_name: Some("mailbridge"),
        to: &recipient,
        subject: &subject,
        text: [Lang::De, Lang::En]
            .map(|lang| report_text(lang, message, device.as_deref(), failure, why))
            .join("\n----\n\n"),
        auto_submitted: true,
    };
    let body = match mail.build() {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, queue_id = %message.id, "cannot write the report of an undeliverable message");
            return Ok(None);
        }
    };
    Ok(Some(NewMessage {
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
    }))
}

/// The report in one language: what happened, the message's facts, Microsoft's
/// answer and what to do; never the message's content.
fn report_text(
    lang: Lang,
    message: &LeasedMessage,
    device: Option<&str>,
    failure: &Failure,
    why: Why,
) -> String {
    let what = if why == Why::Bounced {
        tr!("Microsoft 365 accepted a message but could not deliver it (non-delivery report).")
    } else {
        tr!("A message could not be handed to Microsoft 365.")
    };
    let mut text = format!("{}\n", i18n::translate(lang, what));
    if why == Why::Expired {
        text.push_str(i18n::translate(
            lang,
            "The message could not be delivered within its maximum age.",
        ));
        text.push('\n');
    }
    let received = message
        .received_at
        .format(i18n::translate(lang, "%Y-%m-%d %H:%M:%S UTC"))
        .to_string();
    let answer = format!(
        "{} {}",
        failure.status.map(|s| s.to_string()).unwrap_or_default(),
        failure.message
    );
    let facts = [
        (tr!("Device:"), device.unwrap_or("—").to_owned()),
        (tr!("Received:"), received),
        (tr!("Sender:"), message.mail_from.clone()),
        (tr!("Recipients:"), message.rcpt_to.join(", ")),
        (tr!("Queue id:"), message.id.simple().to_string()),
    ];
    let advice = [
        (tr!("Cause:"), failure.diagnosis.title(lang).to_owned()),
        (tr!("What to do:"), failure.diagnosis.fix(lang).to_owned()),
        (tr!("Answer:"), answer.trim().to_owned()),
    ];
    for rows in [&facts[..], &advice[..]] {
        text.push('\n');
        for (label, value) in rows {
            text.push_str(&format!("{:<13}{value}\n", i18n::translate(lang, label)));
        }
    }
    text.push('\n');
    text.push_str(i18n::translate(
        lang,
        "The message's content is not included.",
    ));
    text.push('\n');
    text
}
