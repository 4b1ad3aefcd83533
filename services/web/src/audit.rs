//! The audit log: every change made through the control plane or its API — who,
//! what, when, from where — written in the same request as the change, and the
//! page and API call that show it, filterable by customer, actor and action.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{Query, State},
    routing::get,
};
use mailbridge_core::ids::TenantId;
use mailbridge_core::store::audit_log;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    WebState,
    error::Result,
    i18n::Tr,
    layout::Nav,
    roles::{Actor, Permission, Role},
    tr,
};

/// Records one change by `actor`.
pub async fn record(
    pool: &PgPool,
    actor: &Actor,
    action: &str,
    tenant_id: Option<TenantId>,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let who = audit_log::Who {
        label: &actor.label,
        staff_id: actor.staff_id,
        client_addr: actor.client_addr.map(ipnet::IpNet::from),
    };
    audit_log::record(pool, who, action, tenant_id, target, details).await
}

/// Records one change by `actor` inside the transaction that makes it.
pub async fn record_in(
    tx: &mut sqlx::PgConnection,
    actor: &Actor,
    action: &str,
    tenant_id: Option<TenantId>,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let who = audit_log::Who {
        label: &actor.label,
        staff_id: actor.staff_id,
        client_addr: actor.client_addr.map(ipnet::IpNet::from),
    };
    audit_log::record(tx, who, action, tenant_id, target, details).await
}

pub use audit_log::AuditEntry;

/// What an action code is called on the page (English; translated where shown).
/// Codes not named here are shown as they are.
pub fn action_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "api_token.create" => tr!("API token created"),
        "api_token.revoke" => tr!("API token revoked"),
        "board.import" => tr!("Sign-in report imported"),
        "board.link_device" => tr!("Account linked to a device"),
        "board.ignore" => tr!("Account ignored"),
        "board.reopen" => tr!("Account reopened"),
        "customer.consent_failed" => tr!("Consent failed"),
        "customer.consent_granted" => tr!("Consent granted"),
        "customer.consent_started" => tr!("Consent started"),
        "customer.create" => tr!("Customer created"),
        "customer.delete" => tr!("Customer deleted"),
        "customer.test_message" => tr!("Test message sent"),
        "customer.update" => tr!("Customer changed"),
        "device.create" => tr!("Device added"),
        "device.delete" => tr!("Device deleted"),
        "device.rotate_password" => tr!("Device password rotated"),
        "device.unlock" => tr!("Device logins unlocked"),
        "device.update" => tr!("Device changed"),
        "hold.probe" => tr!("Hold checked now"),
        "staff.approve" => tr!("Staff member approved"),
        "staff.create" => tr!("Staff member added"),
        "staff.customers" => tr!("Staff member's customers changed"),
        "staff.invitation_withdrawn" => tr!("Invitation withdrawn"),
        "staff.invite" => tr!("Staff member invited"),
        "staff.sign_in" => tr!("Signed in"),
        "staff.sign_out" => tr!("Signed out"),
        "staff.update" => tr!("Staff member changed"),
        _ => return None,
    })
}

/// What a details field is called on the page; `None` for ids that name the
/// entry's own subject (shown in the "What" column already).
fn field_name(key: &str) -> Option<&str> {
    Some(match key {
        "device_id" | "id" | "check" | "tenant_id" => return None,
        "name" => tr!("Name"),
        "sender_mailbox" => tr!("Sender mailbox"),
        "delivery_method" => tr!("Delivery method"),
        "save_to_sent_items" => tr!("Save to Sent Items"),
        "smtp_for_large_messages" => tr!("SMTP for large messages"),
        "notification_address" => tr!("Failure reports to"),
        "rate_limit_per_minute" => tr!("Rate limit per minute"),
        "max_message_bytes" => tr!("Maximum message size"),
        "allowed_networks" => tr!("Allowed networks"),
        "allowed_senders" => tr!("Allowed senders"),
        "sender_policy" => tr!("Sender policy"),
        "enabled" => tr!("Enabled"),
        "kind" => tr!("Kind"),
        "site" => tr!("Site"),
        "listener" => tr!("Connects by"),
        "legacy_tls" => tr!("Legacy TLS"),
        "model_family" => tr!("Model family"),
        "role" => tr!("Role"),
        "username" => tr!("Username"),
        "reason" => tr!("Reason"),
        "detail" => tr!("Microsoft's answer"),
        "entra_tenant_id" => tr!("Entra tenant"),
        "queue_id" => tr!("Message"),
        "email" => tr!("E-mail"),
        "locks" => tr!("Locks"),
        "by" => tr!("How"),
        "issuer" => tr!("Sign-in provider"),
        other => other,
    })
}

/// A details value as text.
fn value_text(tr: Tr, key: &str, value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "–".to_owned(),
        Value::Bool(true) => tr.t("yes").to_owned(),
        Value::Bool(false) => tr.t("no").to_owned(),
        Value::Number(n) => n.to_string(),
        // The reason of a failed consent is one of the page's own texts.
        Value::String(s) if key == "reason" => tr.t(s).to_owned(),
        Value::String(s) if key == "role" => Role::parse(s)
            .map(|r| tr.t(r.label()).to_owned())
            .unwrap_or_else(|| s.clone()),
        Value::String(s) if key == "by" => match s.as_str() {
            "invitation" => tr.t(tr!("invitation")).to_owned(),
            "bootstrap code" => tr.t(tr!("bootstrap code")).to_owned(),
            "waiting for approval" => tr.t(tr!("waiting for approval")).to_owned(),
            other => other.to_owned(),
        },
        Value::String(s) if key == "listener" => match s.as_str() {
            "submission" => tr.t(tr!("Port 587 (STARTTLS)")).to_owned(),
            "submissions" => tr.t(tr!("Port 465 (SSL/TLS)")).to_owned(),
            "relay" => tr.t(tr!("Port 25 (by address)")).to_owned(),
            other => other.to_owned(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "–".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|i| value_text(tr, key, i))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) => value.to_string(),
    }
}

/// One line of an entry's details: a field, and its value or its change.
pub struct DetailLine {
    pub field: String,
    pub before: Option<String>,
    pub after: String,
}

/// An entry as the page shows it.
pub trait Shown {
    /// The action's name in the page's language (the code if it has none).
    fn action_label(&self, tr: Tr) -> String;
    /// The details as a person reads them.
    fn lines(&self, tr: Tr) -> Vec<DetailLine>;
}

impl Shown for AuditEntry {
    fn action_label(&self, tr: Tr) -> String {
        action_name(&self.action)
            .map(|n| tr.t(n).to_owned())
            .unwrap_or_else(|| self.action.clone())
    }

    /// A changed field as before → after (an unchanged one left out), any other
    /// field as its value. A change is written as `[before, after]`.
    fn lines(&self, tr: Tr) -> Vec<DetailLine> {
        let serde_json::Value::Object(fields) = &self.details else {
            return Vec::new();
        };
        let change_of = |key: &str, value: &serde_json::Value| match value {
            serde_json::Value::Array(pair)
                if pair.len() == 2
                    && !matches!(key, "allowed_networks" | "allowed_senders" | "locks") =>
            {
                Some((pair[0].clone(), pair[1].clone()))
            }
            // Lists change as a pair of lists.
            serde_json::Value::Array(pair)
                if pair.len() == 2 && pair.iter().all(serde_json::Value::is_array) =>
            {
                Some((pair[0].clone(), pair[1].clone()))
            }
            _ => None,
        };
        fields
            .iter()
            .filter_map(|(key, value)| {
                let field = tr.t(field_name(key)?).to_owned();
                match change_of(key, value) {
                    Some((before, after)) if before == after => None,
                    Some((before, after)) => Some(DetailLine {
                        field,
                        before: Some(value_text(tr, key, &before)),
                        after: value_text(tr, key, &after),
                    }),
                    None => Some(DetailLine {
                        field,
                        before: None,
                        after: value_text(tr, key, value),
                    }),
                }
            })
            .collect()
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Customer id.
    pub customer: Option<String>,
    /// Who (e-mail address or api-token:name).
    pub actor: Option<String>,
    /// Action prefix, e.g. device.
    pub action: Option<String>,
    /// Entries older than this id (the next page).
    pub before: Option<i64>,
}

const PAGE: i64 = 100;

/// Newest first, one page.
pub async fn search(pool: &PgPool, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let search = audit_log::Search {
        tenant_id: (filter
            .customer
            .as_deref()
            .and_then(|c| Uuid::parse_str(c).ok()))
        .map(Into::into),
        actor: filter
            .actor
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty()),
        action_prefix: filter
            .action
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty()),
        before: filter.before,
        limit: PAGE,
    };
    Ok(audit_log::search(pool, &search).await?)
}

pub fn router() -> Router<WebState> {
    Router::new().route("/audit", get(page))
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    t: Tr,
    nav: Nav,
    entries: Vec<AuditEntry>,
    customers: Vec<(TenantId, String)>,
    filter: AuditFilter,
    next: Option<String>,
}

async fn page(
    State(state): State<WebState>,
    actor: Actor,
    Query(filter): Query<AuditFilter>,
) -> Result<AuditPage> {
    actor.require(Permission::ViewAudit)?;
    let entries = search(&state.pool, &filter).await?;
    let next = (entries.len() as i64 == PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten()
        .map(|before| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in [
                ("customer", &filter.customer),
                ("actor", &filter.actor),
                ("action", &filter.action),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
            query.append_pair("before", &before.to_string());
            query.finish()
        });
    Ok(AuditPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "audit"),
        customers: actor.customers.names(&state.pool).await?,
        entries,
        filter,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;

    fn entry(action: &str, details: serde_json::Value) -> AuditEntry {
        AuditEntry {
            id: 1,
            at: chrono::Utc::now(),
            actor: "ines@msp.example".into(),
            action: action.into(),
            tenant_id: None,
            tenant_name: None,
            target: None,
            details,
            client_addr: None,
        }
    }

    #[test]
    fn details_read_as_changes_of_the_changed_fields_only() {
        let e = entry(
            "device.update",
            serde_json::json!({
                "device_id": "0b7f6c56-54a3-4e0e-9d1d-8e3f3bb0a7a1",
                "enabled": [true, false],
                "site": ["Empfang", "Empfang"],
                "allowed_networks": [["192.0.2.10/32"], ["192.0.2.10/32", "198.51.100.0/24"]],
                "listener": ["submission", "relay"],
            }),
        );
        let de = Tr::new(Lang::De);
        let lines: Vec<String> = e
            .lines(de)
            .into_iter()
            .map(|l| {
                format!(
                    "{}: {} → {}",
                    l.field,
                    l.before.unwrap_or_default(),
                    l.after
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                "Erlaubte Netze: 192.0.2.10/32 → 192.0.2.10/32, 198.51.100.0/24",
                "Aktiv: ja → nein",
                "Verbindet sich über: Port 587 (STARTTLS) → Port 25 (nach Adresse)",
            ]
        );
        assert_eq!(e.action_label(de), "Gerät geändert");
        assert_eq!(e.action_label(Tr::new(Lang::En)), "Device changed");
        // A list of two networks is a value, not a change.
        let created = entry(
            "device.create",
            serde_json::json!({ "allowed_networks": ["192.0.2.10/32", "198.51.100.0/24"] }),
        );
        let line = &created.lines(de)[0];
        assert!(line.before.is_none());
        assert_eq!(line.after, "192.0.2.10/32, 198.51.100.0/24");
        assert_eq!(
            entry("something.new", serde_json::json!({})).action_label(de),
            "something.new"
        );
    }
}
