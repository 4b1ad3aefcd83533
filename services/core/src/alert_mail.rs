//! Alert e-mails: when an alert opens or resolves, a short message in German and
//! English goes to the MSP's alert address through mailbridge's own delivery path —
//! queued like the reports of undeliverable messages, as the sender mailbox of the
//! customer the MSP chose for it (its own tenant, typically). Without a chosen
//! customer, an alert about one customer is sent through that customer's path
//! (except a refused token, whose path is the one that is broken); MSP-wide alerts
//! then go by webhook only.

use crate::ids::MessageId;
use crate::ids::TenantId;
use sqlx::{Postgres, Transaction};

use crate::{
    alerts::{Alert, Channels, Kind},
    i18n::{self, Lang},
    own_mail::OwnMail,
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
    let (to, chosen): (Option<String>, Option<TenantId>) =
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
    let id = MessageId::now();
    let resolved = alert.resolved_at.is_some();
    let title = |lang: Lang| {
        let title = alert.title(lang);
        if resolved {
            i18n::format(lang, "Resolved: {title}", &[("title", &title)])
        } else {
            title.to_owned()
        }
    };
    let subject = format!("[mailbridge] {} / {}", title(Lang::De), title(Lang::En));
    let about = match (alert.customer_name(), alert.device_name()) {
        (Some(c), Some(d)) => format!("{c} · {d}"),
        (Some(c), None) => c,
        _ => "mailbridge".to_owned(),
    };
    let link = &event.payload.links.alert;
    let text = [Lang::De, Lang::En]
        .map(|lang| {
            let state = if resolved {
                i18n::translate(lang, "Resolved")
            } else {
                i18n::translate(lang, "New alert")
            };
            let opened = alert
                .opened_at
                .format(i18n::translate(lang, "%Y-%m-%d %H:%M UTC"));
            format!(
                "{state}: {title}\n{about}\n\n{text}\n\n{opened_label} {opened}\n{link}\n",
                title = alert.title(lang),
                text = alert.text(lang),
                opened_label = i18n::translate(lang, "Opened:"),
            )
        })
        .join("\n----\n\n");
    // The Message-ID names the control plane's host.
    let host = url::Url::parse(&channels.public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "mailbridge".to_owned());
    let mail = OwnMail {
        id,
        host: &host,
        from: &sender,
        from_name: Some("mailbridge"),
        to: &to,
        subject: &subject,
        text,
        auto_submitted: true,
    };
    let body = match mail.build() {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, alert = %alert.id, "cannot write the alert mail");
            return Ok(());
        }
    };
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
        body,
    };
    queue::enqueue_all(&mut **tx, &channels.key, &[&message]).await
}
