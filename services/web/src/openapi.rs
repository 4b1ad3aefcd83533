//! The OpenAPI 3.1 document of `/api/v1`, built from one table of the API's
//! operations (method, path, role, request and response shapes). The end-to-end
//! tests call every operation of this table against the running server and check
//! the status and the documented fields, so the document cannot drift from the code.

use serde_json::{Map, Value, json};

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    /// The least role that may call it.
    pub role: &'static str,
    /// The request body's schema, if it takes one.
    pub request: Option<&'static str>,
    /// The status of success.
    pub status: u16,
    /// The schema of the success response, if it has a body.
    pub response: Option<&'static str>,
}

macro_rules! op {
    ($method:literal, $path:literal, $id:literal, $summary:literal, $role:literal, $request:expr, $status:literal, $response:expr $(,)?) => {
        Operation {
            method: $method,
            path: $path,
            id: $id,
            summary: $summary,
            role: $role,
            request: $request,
            status: $status,
            response: $response,
        }
    };
}

pub static OPERATIONS: &[Operation] = &[
    op!(
        "get",
        "/customers",
        "listCustomers",
        "The customers with their health: searched, sorted, a page at a time",
        "readonly",
        None,
        200,
        Some("CustomerList"),
    ),
    op!(
        "post",
        "/customers",
        "createCustomer",
        "Create a customer (connect it afterwards)",
        "admin",
        Some("CustomerInput"),
        201,
        Some("Customer"),
    ),
    op!(
        "get",
        "/customers/{id}",
        "getCustomer",
        "One customer with its health",
        "readonly",
        None,
        200,
        Some("Customer"),
    ),
    op!(
        "patch",
        "/customers/{id}",
        "updateCustomer",
        "Change a customer's name or delivery settings",
        "admin",
        Some("CustomerPatch"),
        200,
        Some("Customer"),
    ),
    op!(
        "delete",
        "/customers/{id}",
        "deleteCustomer",
        "Delete a customer with its devices and messages",
        "admin",
        None,
        204,
        None,
    ),
    op!(
        "post",
        "/customers/{id}/consent",
        "createConsentLink",
        "An Entra admin-consent link for the customer's admin (valid 24 h, single use)",
        "admin",
        None,
        200,
        Some("ConsentLink"),
    ),
    op!(
        "get",
        "/customers/{id}/connection",
        "getConnection",
        "The customer's connection to Microsoft 365: not connected, connecting (a consent being verified while Microsoft propagates it), connected or failed, with its latest consent check",
        "readonly",
        None,
        200,
        Some("Connection"),
    ),
    op!(
        "get",
        "/customers/{id}/exchange-script",
        "getExchangeScript",
        "Limited mode: the Exchange Online PowerShell script for the customer's admin (New-ServicePrincipal, New-ManagementScope for the sender mailbox, New-ManagementRoleAssignment for Application Mail.Send and Mail.ReadWrite, Test-ServicePrincipalAuthorization); query lang=en|de, ready once the consent is granted",
        "readonly",
        None,
        200,
        Some("ExchangeScript"),
    ),
    op!(
        "post",
        "/customers/{id}/test-message",
        "sendTestMessage",
        "Queue a test message from the customer's sender mailbox",
        "technician",
        Some("TestMessage"),
        202,
        Some("Queued"),
    ),
    op!(
        "get",
        "/customers/{id}/devices",
        "listDevices",
        "The customer's devices with their health: searched, sorted, a page at a time",
        "readonly",
        None,
        200,
        Some("DeviceList"),
    ),
    op!(
        "post",
        "/customers/{id}/devices",
        "createDevice",
        "Add a device: its generated password is in this answer only",
        "technician",
        Some("DeviceInput"),
        201,
        Some("IssuedDevice"),
    ),
    op!(
        "post",
        "/customers/{id}/devices/import",
        "importDevices",
        "Import devices from CSV (name, kind, site, listener, allow-list, sender): a dry run checks every line; otherwise all are created in one transaction, or none when a line is wrong; the passwords are in this answer only",
        "technician",
        Some("DeviceImport"),
        200,
        Some("DeviceImportResult"),
    ),
    op!(
        "post",
        "/customers/{id}/devices/bulk",
        "bulkDevices",
        "Disable devices, or give them new passwords (in this answer only), in one transaction",
        "technician",
        Some("BulkDevices"),
        200,
        Some("BulkDevicesResult"),
    ),
    op!(
        "get",
        "/customers/{id}/devices/{device}",
        "getDevice",
        "One device",
        "readonly",
        None,
        200,
        Some("Device"),
    ),
    op!(
        "patch",
        "/customers/{id}/devices/{device}",
        "updateDevice",
        "Change a device's policy, or disable it",
        "technician",
        Some("DeviceInput"),
        200,
        Some("Device"),
    ),
    op!(
        "delete",
        "/customers/{id}/devices/{device}",
        "deleteDevice",
        "Delete a device",
        "technician",
        None,
        204,
        None,
    ),
    op!(
        "post",
        "/customers/{id}/devices/{device}/rotate",
        "rotateDevicePassword",
        "A new password for the device (in this answer only)",
        "technician",
        None,
        200,
        Some("IssuedDevice"),
    ),
    op!(
        "get",
        "/customers/{id}/devices/{device}/logins",
        "listDeviceLogins",
        "Recent failed logins and current locks of the device's username",
        "readonly",
        None,
        200,
        Some("LoginList"),
    ),
    op!(
        "get",
        "/customers/{id}/devices/{device}/transcripts",
        "listDeviceTranscripts",
        "The device's last sessions on the edge (commands and reply codes, TLS, handshake failures) and what they show",
        "technician",
        None,
        200,
        Some("TranscriptList"),
    ),
    op!(
        "post",
        "/customers/{id}/devices/{device}/unlock",
        "unlockDevice",
        "Lift every lock of the device's username and forget its failures",
        "technician",
        None,
        200,
        Some("Unlocked"),
    ),
    op!(
        "get",
        "/messages",
        "listMessages",
        "Search the message log, newest first",
        "readonly",
        None,
        200,
        Some("MessagePage"),
    ),
    op!(
        "get",
        "/messages/{id}",
        "getMessage",
        "One message with every delivery attempt, explained",
        "readonly",
        None,
        200,
        Some("MessageDetail"),
    ),
    op!(
        "post",
        "/messages/{id}/retry",
        "retryMessage",
        "Try a waiting message again now",
        "technician",
        None,
        204,
        None,
    ),
    op!(
        "post",
        "/messages/{id}/cancel",
        "cancelMessage",
        "Give up on a waiting message",
        "technician",
        None,
        204,
        None,
    ),
    op!(
        "get",
        "/holds",
        "listHolds",
        "Held deliveries: mailboxes, customers and apps whose messages wait for a probe",
        "readonly",
        None,
        200,
        Some("HoldList"),
    ),
    op!(
        "post",
        "/holds/{id}/probe",
        "probeHold",
        "Retry now: the workers probe the hold at once",
        "technician",
        None,
        202,
        None,
    ),
    op!(
        "get",
        "/audit",
        "listAudit",
        "The audit log, newest first",
        "admin",
        None,
        200,
        Some("AuditPage"),
    ),
    // The migration board.
    op!(
        "post",
        "/customers/{id}/smtp-auth-report",
        "importSmtpAuthReport",
        "Import the customer's SMTP AUTH clients report (CSV as exported from the Exchange admin center, summary or details view, or the board's PowerShell exposure list); a file that cannot be read is refused whole",
        "technician",
        Some("SmtpAuthReportCsv"),
        201,
        Some("ImportOutcome"),
    ),
    op!(
        "get",
        "/customers/{id}/board",
        "getBoard",
        "The customer's migration board: every account Microsoft saw sending with SMTP AUTH and its state",
        "readonly",
        None,
        200,
        Some("Board"),
    ),
    op!(
        "post",
        "/customers/{id}/board/device",
        "createBoardDevice",
        "Create a relay device for an account (named after it, allowed to send as it) and link them; the password is shown this once",
        "technician",
        Some("BoardAction"),
        201,
        Some("BoardDevice"),
    ),
    op!(
        "post",
        "/customers/{id}/board/link",
        "linkBoardDevice",
        "Link an account to an existing device of the customer",
        "technician",
        Some("BoardAction"),
        200,
        Some("BoardAccount"),
    ),
    op!(
        "post",
        "/customers/{id}/board/ignore",
        "ignoreBoardAccount",
        "Set an account aside with a reason",
        "technician",
        Some("BoardAction"),
        200,
        Some("BoardAccount"),
    ),
    op!(
        "post",
        "/customers/{id}/board/reopen",
        "reopenBoardAccount",
        "Take an ignored or done account back",
        "technician",
        Some("BoardAction"),
        200,
        Some("BoardAccount"),
    ),
    op!(
        "get",
        "/readiness",
        "getReadiness",
        "Every customer's readiness for Microsoft's deadline, most at risk first, with the dates",
        "readonly",
        None,
        200,
        Some("Readiness"),
    ),
    op!(
        "get",
        "/board.csv",
        "exportBoard",
        "Every customer's migration board as CSV",
        "readonly",
        None,
        200,
        Some("BoardCsv"),
    ),
    // Alerts, webhooks and usage.
    op!(
        "get",
        "/alerts",
        "listAlerts",
        "Alerts, open first, newest first",
        "readonly",
        None,
        200,
        Some("AlertList"),
    ),
    op!(
        "post",
        "/alerts/{id}/acknowledge",
        "acknowledgeAlert",
        "Acknowledge an open alert (someone is on it)",
        "technician",
        None,
        200,
        Some("Alert"),
    ),
    op!(
        "get",
        "/webhooks",
        "listWebhooks",
        "The webhooks alert events are posted to",
        "admin",
        None,
        200,
        Some("WebhookList"),
    ),
    op!(
        "post",
        "/webhooks",
        "createWebhook",
        "Add a webhook; its signing secret is in the answer, this once",
        "admin",
        Some("WebhookInput"),
        201,
        Some("CreatedWebhook"),
    ),
    op!(
        "get",
        "/webhooks/{id}/deliveries",
        "listWebhookDeliveries",
        "The webhook's delivery log: the last tries with the receiver's answers",
        "admin",
        None,
        200,
        Some("WebhookDeliveries"),
    ),
    op!(
        "post",
        "/webhooks/{id}/test",
        "testWebhook",
        "Post a test event to the webhook (its answer appears in the delivery log)",
        "admin",
        None,
        202,
        None,
    ),
    op!(
        "get",
        "/usage",
        "getUsage",
        "Usage per customer for a month (UTC), for billing",
        "readonly",
        None,
        200,
        Some("Usage"),
    ),
];

fn string() -> Value {
    json!({ "type": "string" })
}
fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}
fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}
/// A page of a searched list: `items` and where the page is.
fn list_page(mut items: Value) -> Value {
    items["total"] = json!({ "type": "integer", "description": "Entries matching the search" });
    items["offset"] = json!({ "type": "integer" });
    items["limit"] = json!({ "type": "integer" });
    items["next_offset"] = json!({ "type": ["integer", "null"], "description": "The offset of the next page; null on the last (or at the deepest offset: narrow with q)" });
    items
}

/// The schemas of the bodies, by name.
fn schemas() -> Value {
    let health = object(
        &[
            "connected",
            "consent_ok",
            "connecting",
            "queued",
            "accepted_24h",
            "bounced_24h",
            "failed_24h",
            "rejects_24h",
            "devices",
            "stale_devices",
        ],
        json!({
            "connected": { "type": "boolean", "description": "Connected to its Microsoft 365 tenant by a verified admin consent" },
            "consent_ok": { "type": "boolean", "description": "Connected, and no token refusal since the last issued token" },
            "connecting": { "type": "boolean", "description": "A consent was granted and is being verified (see getConnection)" },
            "last_token_error": nullable("string"),
            "last_token_error_at": nullable("string"),
            "holds": { "type": "array", "items": { "$ref": "#/components/schemas/Hold" }, "description": "The holds that keep this customer's messages waiting" },
            "queued": { "type": "integer" },
            "accepted_24h": { "type": "integer", "description": "Messages accepted by Microsoft (Graph 202, SMTP 250) in the last 24 hours." },
            "bounced_24h": { "type": "integer", "description": "Messages accepted, then reported undeliverable by Microsoft (a non-delivery report), in the last 24 hours." },
            "failed_24h": { "type": "integer" },
            "rejects_24h": { "type": "array", "items": object(&["code", "count"], json!({ "code": string(), "count": { "type": "integer" } })) },
            "devices": { "type": "integer" },
            "stale_devices": { "type": "integer", "description": "Enabled devices not seen for 7 days (never seen: added more than 7 days ago)" },
        }),
    );
    let device_props = json!({
        "id": { "type": "string", "format": "uuid" },
        "tenant_id": { "type": "string", "format": "uuid" },
        "name": string(),
        "username": string(),
        "enabled": { "type": "boolean" },
        "created_at": { "type": "string", "format": "date-time" },
        "last_seen_at": nullable("string"),
        "allowed_networks": { "type": "array", "items": string() },
        "allowed_senders": { "type": "array", "items": string() },
        "sender_policy": { "enum": ["rewrite", "enforce"] },
        "rate_limit_per_minute": nullable("integer"),
        "kind": { "enum": ["printer", "scanner", "medical", "software", "other"] },
        "site": nullable("string"),
        "listener": { "enum": ["submission", "submissions", "relay"] },
        "legacy_tls": { "type": "boolean", "description": "May log in on the legacy-TLS listener (TLS 1.0/1.1, CBC suites)" },
        "model_family": { "type": ["string", "null"], "description": "A model family key of the model notes" },
    });
    let transcript_line = object(
        &["at_ms", "command", "replies"],
        json!({
            "at_ms": { "type": "integer" },
            "command": { "type": "string", "description": "The verb, AUTH with its mechanism, or a step in brackets; never a password or AUTH data" },
            "replies": { "type": "array", "items": string(), "description": "Reply code and enhanced status code" },
        }),
    );
    let transcript = object(
        &[
            "id",
            "source_addr",
            "started_at",
            "ended_at",
            "listener",
            "outcome",
            "lines",
        ],
        json!({
            "id": { "type": "integer" },
            "device_id": { "type": ["string", "null"], "format": "uuid", "description": "null: a session from the device's site that never named a device (e.g. a failed TLS handshake)" },
            "source_addr": string(),
            "started_at": { "type": "string", "format": "date-time" },
            "ended_at": { "type": "string", "format": "date-time" },
            "listener": { "enum": ["submission", "submissions", "relay", "legacy-submission", "legacy-submissions"] },
            "tls_protocol": nullable("string"),
            "tls_cipher": nullable("string"),
            "tls_failure": { "type": ["string", "null"], "description": "Why the TLS handshake failed" },
            "outcome": { "enum": ["quit", "disconnected", "closed", "tls_failed"] },
            "lines": { "type": "array", "items": { "$ref": "#/components/schemas/TranscriptLine" } },
        }),
    );
    let finding = object(
        &["key", "count", "since", "text", "text_de"],
        json!({
            "key": string(),
            "count": { "type": "integer" },
            "since": { "type": "string", "format": "date-time" },
            "detail": nullable("string"),
            "text": string(),
            "text_de": string(),
        }),
    );
    let device_required = [
        "id",
        "tenant_id",
        "name",
        "username",
        "enabled",
        "allowed_networks",
        "allowed_senders",
        "sender_policy",
        "kind",
        "listener",
    ];
    // A device in the list: its settings and its health.
    let mut health_props = device_props.clone();
    for (name, schema) in [
        (
            "messages_24h",
            json!({ "type": "integer", "description": "Messages received from it in the last 24 hours" }),
        ),
        (
            "failed_24h",
            json!({ "type": "integer", "description": "Its messages that failed in the last 24 hours" }),
        ),
        (
            "queued",
            json!({ "type": "integer", "description": "Its messages waiting or being delivered" }),
        ),
        (
            "failed_logins_24h",
            json!({ "type": "integer", "description": "Wrong passwords for its username in the last 24 hours" }),
        ),
        ("last_failed_login_at", nullable("string")),
        (
            "last_failed_login_from",
            json!({ "type": ["string", "null"], "description": "The address the last wrong password came from" }),
        ),
        (
            "locked",
            json!({ "type": "boolean", "description": "The edge refuses its logins after repeated failures until locked_until or an unlock (unlockDevice)" }),
        ),
        ("locked_until", nullable("string")),
    ] {
        health_props[name] = schema;
    }
    let mut health_required = device_required.to_vec();
    health_required.extend([
        "last_seen_at",
        "messages_24h",
        "failed_24h",
        "queued",
        "failed_logins_24h",
        "locked",
    ]);
    let mut issued_props = device_props.clone();
    issued_props["password"] = json!({ "type": "string", "description": "Shown this once; mailbridge keeps only its hash" });
    let mut issued_required = device_required.to_vec();
    issued_required.push("password");
    let message_props = json!({
        "id": { "type": "string", "format": "uuid" },
        "tenant_id": { "type": "string", "format": "uuid" },
        "tenant_name": string(),
        "device_id": nullable("string"),
        "device_name": nullable("string"),
        "kind": { "enum": ["device", "notification", "test"] },
        "mail_from": string(),
        "rcpt_to": { "type": "array", "items": string() },
        "subject": nullable("string"),
        "size_bytes": { "type": "integer" },
        "state": { "enum": ["queued", "delivering", "accepted", "bounced", "failed"], "description": "accepted: Microsoft accepted the message (Graph 202, SMTP 250), which is not yet delivery; bounced: Microsoft then sent back a non-delivery report (see bounces)." },
        "attempt_count": { "type": "integer" },
        "received_at": { "type": "string", "format": "date-time" },
        "next_attempt_at": { "type": "string", "format": "date-time" },
        "finished_at": nullable("string"),
        "last_error": nullable("string"),
        "client_addr": string(),
        "tls_protocol": nullable("string"),
        "tls_cipher": nullable("string"),
    });
    let message_required = [
        "id",
        "tenant_id",
        "tenant_name",
        "mail_from",
        "rcpt_to",
        "size_bytes",
        "state",
        "attempt_count",
        "received_at",
        "client_addr",
    ];
    let mut detail_props = message_props.clone();
    detail_props["attempts"] =
        json!({ "type": "array", "items": { "$ref": "#/components/schemas/Attempt" } });
    detail_props["bounces"] = json!({ "type": "array", "description": "Recipients Microsoft reported undeliverable (non-delivery reports) after accepting the message", "items": { "$ref": "#/components/schemas/Bounce" } });
    let mut detail_required = message_required.to_vec();
    detail_required.push("attempts");
    detail_required.push("bounces");
    let explanation_text = object(
        &["what", "fix"],
        json!({ "what": string(), "fix": string() }),
    );
    let customer_props = json!({
        "id": { "type": "string", "format": "uuid" },
        "name": string(),
        "entra_tenant_id": nullable("string"),
        "sender_mailbox": string(),
        "delivery_method": { "enum": ["graph", "smtp"] },
        "save_to_sent_items": { "type": "boolean" },
        "smtp_for_large_messages": { "type": "boolean" },
        "notification_address": nullable("string"),
        "rate_limit_per_minute": nullable("integer"),
        "max_message_bytes": { "type": "integer", "minimum": 1048576, "maximum": 157286400, "description": "The largest message the customer's devices may send: its sender mailbox's maximum send size in Exchange Online (35 MB unless raised)" },
        "consented_at": nullable("string"),
        "created_at": { "type": "string", "format": "date-time" },
        "health": { "$ref": "#/components/schemas/Health" },
        "permissions": object(&["mode", "graph_path", "tenant_wide_roles", "waiting_for_exchange_script"], json!({
            "mode": { "enum": ["limited", "tenant_wide"], "description": "limited: RBAC for Applications on the sender mailbox only; tenant_wide: Entra application permissions for every mailbox" },
            "graph_path": { "type": "boolean", "description": "The mode applies (Graph); SMTP AUTH is mailbox-scoped anyway" },
            "service_principal_id": nullable("string"),
            "tenant_wide_roles": { "type": "array", "items": string(), "description": "Tenant-wide mail roles in the customer's token: a warning" },
            "roles_seen_at": nullable("string"),
            "exchange_verified_at": nullable("string"),
            "waiting_for_exchange_script": { "type": "boolean" },
            "exchange_refused": { "type": "boolean" },
        })),
    });
    let mut all = json!({
        "Error": object(&["error"], json!({ "error": object(&["code", "message"], json!({
            "code": { "enum": ["unauthenticated", "forbidden", "csrf", "not_found", "invalid", "invalid_parameter", "conflict", "rate_limited", "database_unavailable", "internal"] },
            "parameter": { "type": "string", "description": "invalid_parameter: the query parameter at fault" },
            "message": string() })) })),
        "Health": health,
        "Hold": object(&["id", "scope", "subject", "reason", "since", "next_probe_at", "probe_failures", "messages_held"], json!({
            "id": { "type": "string", "format": "uuid" },
            "scope": { "enum": ["mailbox", "customer", "app"] },
            "subject": { "type": "string", "description": "The mailbox, the customer's id, or the app's client id" },
            "customer_id": nullable("string"),
            "customer_name": nullable("string"),
            "reason": { "type": "string", "description": "The diagnosis key" },
            "explanation": { "type": ["object", "null"], "properties": {
                "class": { "enum": ["retry", "permanent"] }, "en": explanation_text.clone(), "de": explanation_text.clone() } },
            "detail": { "type": "string", "description": "Microsoft's code and text as last heard" },
            "since": { "type": "string", "format": "date-time" },
            "next_probe_at": { "type": "string", "format": "date-time" },
            "last_probe_at": nullable("string"),
            "probe_failures": { "type": "integer" },
            "messages_held": { "type": "integer" },
        })),
        "HoldList": object(&["holds"], json!({ "holds": { "type": "array", "items": { "$ref": "#/components/schemas/Hold" } } })),
        "Customer": object(&["id", "name", "entra_tenant_id", "sender_mailbox", "delivery_method", "health"], customer_props),
        "CustomerList": object(&["customers", "total", "offset", "limit", "next_offset"], list_page(json!({ "customers": { "type": "array", "items": { "$ref": "#/components/schemas/Customer" } } }))),
        "CustomerInput": object(&["name", "sender_mailbox"], json!({
            "name": string(),
            "sender_mailbox": { "type": "string", "description": "The mailbox messages are sent as (needs a licence or is a shared mailbox)" },
            "delivery_method": { "enum": ["graph", "smtp"] },
            "entra_tenant_id": { "type": "string", "description": "If known: the consent then goes to this tenant" },
            "save_to_sent_items": { "type": "boolean" },
            "smtp_for_large_messages": { "type": "boolean" },
            "notification_address": string(),
            "rate_limit_per_minute": string(),
            "permission_mode": { "enum": ["limited", "tenant_wide"], "description": "Graph path: limited to the sender mailbox (default, recommended) or tenant-wide" },
        })),
        "CustomerPatch": object(&[], json!({
            "name": string(), "sender_mailbox": string(), "delivery_method": { "enum": ["graph", "smtp"] },
            "permission_mode": { "enum": ["limited", "tenant_wide"] },
            "save_to_sent_items": { "type": "boolean" }, "smtp_for_large_messages": { "type": "boolean" },
            "notification_address": nullable("string"), "rate_limit_per_minute": nullable("integer"),
            "max_message_bytes": { "type": "integer", "minimum": 1048576, "maximum": 157286400 },
        })),
        "Connection": object(&["state", "entra_tenant_id", "consented_at", "check"], json!({
            "state": { "enum": ["not_connected", "connecting", "waiting_for_exchange_script", "connected", "failed"] },
            "entra_tenant_id": nullable("string"),
            "consented_at": nullable("string"),
            "check": {
                "description": "The latest consent check (null before the first consent through mailbridge)",
                "oneOf": [{ "type": "null" }, object(&["id", "state", "entra_tenant_id", "requested_at", "attempts"], json!({
                    "id": { "type": "string", "format": "uuid" },
                    "state": { "enum": ["pending", "verified", "failed"] },
                    "entra_tenant_id": { "type": "string", "format": "uuid" },
                    "requested_at": string(),
                    "attempts": { "type": "integer", "description": "Token requests made so far" },
                    "next_attempt_at": nullable("string"),
                    "finished_at": nullable("string"),
                    "error_code": { "type": ["string", "null"], "description": "The last refusal's diagnosis key, e.g. AADSTS700016 or MissingRole" },
                    "error_detail": { "type": ["string", "null"], "description": "Microsoft's answer in its own words" },
                    "problem": { "type": ["string", "null"], "description": "What the refusal means (in the caller's language)" },
                    "fix": { "type": ["string", "null"], "description": "What to do about it" },
                }))],
            },
        })),
        "ConsentLink": object(&["consent_url"], json!({ "consent_url": { "type": "string", "format": "uri" } })),
        "TestMessage": object(&["recipient"], json!({ "recipient": string() })),
        "Queued": object(&["queue_id"], json!({ "queue_id": { "type": "string", "format": "uuid" } })),
        "Device": object(&device_required, device_props),
        "IssuedDevice": object(&issued_required, issued_props),
        "DeviceList": object(&["devices", "total", "offset", "limit", "next_offset"], list_page(json!({ "devices": { "type": "array", "items": { "$ref": "#/components/schemas/DeviceHealth" } } }))),
        "DeviceInput": object(&[], json!({
            "name": { "type": "string", "description": "Required when adding" },
            "kind": { "enum": ["printer", "scanner", "medical", "software", "other"] },
            "site": string(),
            "listener": { "enum": ["submission", "submissions", "relay"] },
            "allowed_networks": { "type": "array", "items": string(), "description": "Addresses or CIDR networks; a relay (port 25) device is identified by these" },
            "allowed_senders": { "type": "array", "items": string(), "description": "Addresses or @domains the device may send as" },
            "sender_policy": { "enum": ["rewrite", "enforce"] },
            "rate_limit_per_minute": string(),
            "enabled": { "type": "boolean" },
            "legacy_tls": { "type": "boolean", "description": "Allow the legacy-TLS listener (only for devices that cannot do TLS 1.2)" },
            "model_family": { "type": "string", "description": "A model family key of the model notes; empty clears it" },
        })),
        "LoginFailures": object(&["scope", "source", "failures", "last_failure_at", "last_source", "locked_until"], json!({
            "scope": { "enum": ["pair", "username"], "description": "pair: this username from one source network (an IPv4 address or an IPv6 /64); username: from every address the device has not logged in from" },
            "source": { "type": ["string", "null"], "description": "The source network of a pair" },
            "failures": { "type": "integer", "description": "Wrong passwords in the current window" },
            "last_failure_at": { "type": "string", "format": "date-time" },
            "last_source": { "type": "string", "description": "The address the last failure came from" },
            "locked_until": { "type": ["string", "null"], "format": "date-time", "description": "Set while locked" },
        })),
        "LoginList": object(&["logins"], json!({ "logins": { "type": "array", "items": { "$ref": "#/components/schemas/LoginFailures" } } })),
        "Unlocked": object(&["unlocked"], json!({ "unlocked": { "type": "boolean", "description": "Whether anything was locked or counted" } })),
        "Message": object(&message_required, message_props),
        "MessagePage": object(&["messages", "next"], json!({
            "messages": { "type": "array", "items": { "$ref": "#/components/schemas/Message" } },
            "next": { "type": ["string", "null"], "description": "Pass as `after` for the next page" },
        })),
        "MessageDetail": object(&detail_required, detail_props),
        "Attempt": object(&["started_at", "duration_ms", "method", "outcome", "worker"], json!({
            "started_at": { "type": "string", "format": "date-time" },
            "duration_ms": { "type": "integer" },
            "method": string(),
            "outcome": { "enum": ["accepted", "retry", "permanent"] },
            "upstream_status": nullable("integer"),
            "upstream_code": nullable("string"),
            "upstream_message": nullable("string"),
            "diagnosis": nullable("string"),
            "mailbox": nullable("string"),
            "worker": string(),
            "explanation": { "type": ["object", "null"], "properties": {
                "class": { "enum": ["retry", "permanent"] }, "en": explanation_text.clone(), "de": explanation_text } },
        })),
        "Bounce": object(&["recipient", "status", "diagnosis", "reported_at"], json!({
            "recipient": string(),
            "status": { "type": "string", "description": "Microsoft's enhanced status code, e.g. 5.1.10" },
            "diagnostic_code": nullable("string"),
            "diagnosis": { "type": "string", "description": "The diagnosis key, e.g. NDR 5.1.10" },
            "reported_at": { "type": "string", "format": "date-time" },
            "explanation": { "type": ["object", "null"], "properties": {
                "class": { "enum": ["retry", "permanent"] }, "en": explanation_text.clone(), "de": explanation_text.clone() } },
        })),
        "AuditPage": object(&["entries"], json!({ "entries": { "type": "array", "items": object(
            &["id", "at", "actor", "action"],
            json!({ "id": { "type": "integer" }, "at": { "type": "string", "format": "date-time" }, "actor": string(),
                    "action": string(), "tenant_id": nullable("string"), "tenant_name": nullable("string"),
                    "target": nullable("string"), "details": { "type": "object" }, "client_addr": nullable("string") })) } })),
    });
    let transcripts = [
        (
            "TranscriptList",
            object(
                &["transcripts", "diagnosis"],
                json!({
                    "transcripts": { "type": "array", "items": { "$ref": "#/components/schemas/Transcript" } },
                    "diagnosis": { "type": "array", "items": { "$ref": "#/components/schemas/Finding" } },
                }),
            ),
        ),
        ("Transcript", transcript),
        ("TranscriptLine", transcript_line),
        ("Finding", finding),
    ];
    for (name, schema) in transcripts {
        all[name] = schema;
    }
    all["DeviceHealth"] = object(&health_required, health_props);
    all["ExchangeScript"] = object(
        &["ready", "language", "mode", "sender_mailbox"],
        json!({
            "ready": { "type": "boolean", "description": "The script is filled in (the consent told the service principal's object id)" },
            "language": { "enum": ["en", "de"] },
            "mode": { "enum": ["limited", "tenant_wide"] },
            "app_id": nullable("string"),
            "service_principal_id": nullable("string"),
            "sender_mailbox": string(),
            "script": { "type": ["string", "null"], "description": "Exchange Online PowerShell, comments in the requested language" },
            "reason": { "type": ["string", "null"], "description": "Why it is not ready" },
        }),
    );
    all
}

/// The migration board's schemas (apart: one `json!` for all would recurse too deep).
fn board_schemas() -> Value {
    let readiness_customer = object(
        &[
            "tenant_id",
            "tenant_name",
            "connected",
            "to_migrate",
            "in_progress",
            "done",
            "ignored",
            "exposed_unused",
            "basic_messages",
            "no_data",
        ],
        json!({
            "tenant_id": string(), "tenant_name": string(), "connected": { "type": "boolean" },
            "to_migrate": { "type": "integer" }, "in_progress": { "type": "integer" }, "done": { "type": "integer" },
            "ignored": { "type": "integer" }, "exposed_unused": { "type": "integer" }, "basic_messages": { "type": "integer" },
            "last_import_at": { "type": ["string", "null"], "format": "date-time" }, "no_data": { "type": "boolean" } }),
    );
    json!({
        "ImportOutcome": object(&["import_id", "kind", "rows", "accounts", "added", "done", "reopened"], json!({
            "import_id": { "type": "integer" },
            "kind": { "enum": ["summary", "details", "exposure"] },
            "rows": { "type": "integer" },
            "accounts": { "type": "integer" },
            "added": { "type": "array", "items": string(), "description": "Accounts new on the board" },
            "done": { "type": "array", "items": string(), "description": "Accounts moved to done: no Basic use any more" },
            "reopened": { "type": "array", "items": string(), "description": "Done accounts whose Basic use came back" },
        })),
        "BoardAccount": object(&["account", "state", "basic_messages", "oauth_messages", "sources", "seen_sending"], json!({
            "account": string(),
            "state": { "enum": ["to_migrate", "device_created", "relay_traffic_seen", "done", "ignored", "exposed_unused", "no_basic_use"] },
            "basic_messages": { "type": "integer", "description": "Basic (or unstated) messages in the latest data" },
            "oauth_messages": { "type": "integer" },
            "first_seen_at": { "type": ["string", "null"], "format": "date-time" },
            "last_seen_at": { "type": ["string", "null"], "format": "date-time" },
            "sources": { "type": "array", "items": string(), "description": "Client addresses or names the report names" },
            "seen_sending": { "type": "boolean" },
            "smtp_auth_enabled": nullable("boolean"),
            "device_id": nullable("string"),
            "device_name": nullable("string"),
            "relay_seen_at": { "type": ["string", "null"], "format": "date-time" },
            "done_at": { "type": ["string", "null"], "format": "date-time" },
            "ignore_reason": nullable("string"),
        })),
        "Board": object(&["customer_id", "accounts"], json!({
            "customer_id": string(),
            "accounts": { "type": "array", "items": { "$ref": "#/components/schemas/BoardAccount" } },
        })),
        "BoardAction": object(&["account"], json!({
            "account": string(),
            "name": { "type": "string", "description": "createBoardDevice: the device's name (default: suggested from the account)" },
            "kind": { "enum": ["printer", "scanner", "medical", "software", "other"] },
            "device_id": { "type": "string", "format": "uuid", "description": "linkBoardDevice" },
            "reason": { "type": "string", "description": "ignoreBoardAccount, 1–500 characters" },
        })),
        "BoardDevice": object(&["device", "account"], json!({
            "device": { "$ref": "#/components/schemas/IssuedDevice" },
            "account": { "$ref": "#/components/schemas/BoardAccount" },
        })),
        "Alert": object(&["id", "kind", "subject", "severity", "facts", "opened_at", "updated_at", "title", "text"], json!({
            "id": { "type": "string", "format": "uuid" },
            "kind": { "enum": ["device_silent", "device_lockout", "customer_token", "refusals", "queue_age", "bounce_rate", "app_credential", "edge_certificate"] },
            "subject": { "type": "string", "description": "The device's or customer's id, the credential (secret, certificate) or the edge's host name" },
            "tenant_id": nullable("string"),
            "device_id": nullable("string"),
            "severity": { "enum": ["warning", "critical"] },
            "facts": { "type": "object", "description": "The numbers behind the texts, per kind" },
            "opened_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" },
            "resolved_at": { "type": ["string", "null"], "format": "date-time" },
            "acknowledged_at": { "type": ["string", "null"], "format": "date-time" },
            "acknowledged_by": nullable("string"),
            "title": { "type": "string", "description": "In the request's language" },
            "text": { "type": "string", "description": "In the request's language" },
        })),
        "AlertList": object(&["alerts"], json!({ "alerts": { "type": "array", "items": { "$ref": "#/components/schemas/Alert" } } })),
        "Webhook": object(&["id", "name", "url", "enabled", "created_at"], json!({
            "id": { "type": "string", "format": "uuid" }, "name": string(), "url": string(),
            "enabled": { "type": "boolean" }, "created_at": { "type": "string", "format": "date-time" },
        })),
        "WebhookList": object(&["webhooks"], json!({ "webhooks": { "type": "array", "items": { "$ref": "#/components/schemas/Webhook" } } })),
        "WebhookInput": object(&["name", "url"], json!({
            "name": string(),
            "url": { "type": "string", "description": "https:// (http:// only to an allowed loopback address); internal addresses are refused unless the operator allows them" },
        })),
        "CreatedWebhook": object(&["webhook", "secret"], json!({
            "webhook": { "$ref": "#/components/schemas/Webhook" },
            "secret": { "type": "string", "description": "whsec_…: verify X-Mailbridge-Signature with it; shown this once" },
        })),
        "WebhookDeliveries": object(&["deliveries"], json!({ "deliveries": { "type": "array", "items": object(&["event_id", "event_type", "at", "duration_ms", "response"], json!({
            "event_id": string(), "event_type": string(), "at": { "type": "string", "format": "date-time" },
            "duration_ms": { "type": "integer" }, "status": nullable("integer"),
            "response": { "type": "string", "description": "The start of the receiver's answer" },
            "error": nullable("string"),
        })) } })),
        "WebhookEvent": object(&["id", "type", "occurred_at", "severity", "title", "text", "links"], json!({
            "id": { "type": "string", "format": "uuid", "description": "The same on every retry: deduplicate on it" },
            "type": { "enum": ["alert.opened", "alert.updated", "alert.resolved", "alert.acknowledged", "test"] },
            "occurred_at": { "type": "string", "format": "date-time" },
            "severity": { "enum": ["warning", "critical", "info"] },
            "customer": { "type": ["object", "null"], "properties": { "id": string(), "name": nullable("string") } },
            "device": { "type": ["object", "null"], "properties": { "id": string(), "name": nullable("string") } },
            "title": object(&["en", "de"], json!({ "en": string(), "de": string() })),
            "text": object(&["en", "de"], json!({ "en": string(), "de": string() })),
            "alert": { "type": ["object", "null"], "description": "The alert: id, kind, subject, state (open, resolved), opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by, facts" },
            "links": object(&["alert"], json!({ "alert": string(), "customer": nullable("string"), "device": nullable("string") })),
        })),
        "Usage": object(&["month", "customers"], json!({
            "month": { "type": "string", "description": "YYYY-MM" },
            "customers": { "type": "array", "items": object(&["customer_id", "customer", "accepted", "accepted_by_microsoft", "bounced", "failed", "recipients", "bytes", "active_devices"], json!({
                "customer_id": string(), "customer": string(),
                "accepted": { "type": "integer", "description": "Device messages accepted and settled" },
                "accepted_by_microsoft": { "type": "integer" },
                "bounced": { "type": "integer", "description": "Accepted by Microsoft, then returned as undeliverable" },
                "failed": { "type": "integer" },
                "recipients": { "type": "integer" },
                "bytes": { "type": "integer" },
                "active_devices": { "type": "integer", "description": "Devices that sent anything in the month" },
            })) },
        })),
        "Readiness": object(&["deadlines", "deadlines_origin", "totals", "customers"], json!({
            "deadlines": { "type": "array", "items": object(&["id", "title", "source", "days_left"], json!({
                "id": string(), "title": string(), "title_de": nullable("string"),
                "date": { "type": ["string", "null"], "format": "date" }, "expected": nullable("string"),
                "source": string(), "days_left": nullable("integer") })) },
            "deadlines_origin": { "type": "string", "description": "built-in, or the operator's file" },
            "totals": { "type": "object" },
            "customers": { "type": "array", "items": readiness_customer },
        })),
    })
}

fn parameters(op: &Operation) -> Vec<Value> {
    let mut params: Vec<Value> = ["id", "device"]
        .into_iter()
        .filter(|p| op.path.contains(&format!("{{{p}}}")))
        .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }))
        .collect();
    let query: &[(&str, &str)] = match op.id {
        "listMessages" => &[
            (
                "id",
                "A message id: dashed, the 32 hex digits of the SMTP reply (queued as …), or a Message-ID <id@host>",
            ),
            ("customer", "Customer id"),
            ("device", "Device id"),
            ("sender", "Envelope sender (exact)"),
            ("recipient", "A recipient (exact)"),
            ("state", "queued, delivering, accepted, bounced or failed"),
            (
                "from",
                "Received at or after (RFC 3339 or YYYY-MM-DDTHH:MM, UTC)",
            ),
            ("until", "Received before"),
            ("after", "The `next` cursor of the previous page"),
            ("limit", "Messages per page (1–500, default 50)"),
        ],
        "listAudit" => &[
            ("customer", "Customer id"),
            ("actor", "Who (e-mail address or api-token:name)"),
            ("action", "Action prefix, e.g. device."),
            ("before", "Entries older than this id"),
        ],
        "listAlerts" => &[
            ("customer", "Customer id"),
            ("device", "Device id"),
            ("open", "true: open alerts only"),
        ],
        "getUsage" => &[("month", "YYYY-MM (UTC; default: this month)")],
        "listCustomers" => &[
            (
                "q",
                "Part of the name or the sender mailbox (at most 200 characters)",
            ),
            ("sort", LIST_SORT),
            ("offset", LIST_OFFSET),
            ("limit", LIST_LIMIT),
        ],
        "listDevices" => &[
            (
                "q",
                "Part of the name, site, username or an allowed sender (at most 200 characters)",
            ),
            ("sort", LIST_SORT),
            ("offset", LIST_OFFSET),
            ("limit", LIST_LIMIT),
        ],
        _ => &[],
    };
    params.extend(query.iter().map(|(name, description)| {
        json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
    }));
    params
}

const LIST_SORT: &str = "name (default), last_seen (longest unseen first), queued (most first) or failures (most in 24 h first)";
const LIST_OFFSET: &str = "Entries to skip (0–10000, default 0): the previous page's next_offset";
const LIST_LIMIT: &str = "Entries per page (1–200, default 50)";

/// Whether the operation takes the list parameters (a bad one is a 400).
fn takes_list_parameters(op: &Operation) -> bool {
    matches!(op.id, "listCustomers" | "listDevices")
}

/// The whole document.
pub fn document(public_url: &str) -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut responses = Map::new();
        let success = match op.response {
            Some(schema) if schema.ends_with("Csv") => {
                json!({ "description": "Success", "content": { "text/csv": { "schema": { "type": "string" } } } })
            }
            Some(schema) => {
                json!({ "description": "Success", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
            }
            None => json!({ "description": "Success" }),
        };
        responses.insert(op.status.to_string(), success);
        let error = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        responses.insert("401".into(), error(
            "No API token, or one unknown, revoked, expired, or whose creator is disabled or no longer holds its role",
        ));
        responses.insert("403".into(), error("The token's role does not allow this"));
        if takes_list_parameters(op) {
            responses.insert(
                "400".into(),
                error("A bad query parameter: error.parameter names it (invalid_parameter)"),
            );
        }
        if op.path.contains('{') {
            responses.insert("404".into(), error("No such customer, device or message"));
        }
        if op.request.is_some() || op.method == "post" {
            responses.insert("409".into(), error("Conflicts with the current state"));
            responses.insert(
                "422".into(),
                error("Invalid input; the message says what to change"),
            );
        }
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "description": format!("Needs the role {} or higher.", op.role),
            "parameters": parameters(op),
            "responses": responses,
        });
        if op.request.is_some_and(|s| s.ends_with("Csv")) {
            operation["requestBody"] = json!({ "required": true, "content": { "text/csv": { "schema": { "type": "string" } } } });
        } else if let Some(schema) = op.request {
            operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation;
    }
    let mut all_schemas = schemas();
    if let (Some(all), Value::Object(board)) = (all_schemas.as_object_mut(), board_schemas()) {
        all.extend(board);
    }
    if let (Some(all), Value::Object(bulk)) =
        (all_schemas.as_object_mut(), crate::device_bulk::schemas())
    {
        all.extend(bulk);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mailbridge API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Everything the mailbridge control plane can do, for automation. Authenticate with an API token created under API tokens: `Authorization: Bearer mbt_…`.",
        },
        "servers": [{ "url": format!("{public_url}/api/v1") }],
        "security": [{ "apiToken": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "apiToken": { "type": "http", "scheme": "bearer" } },
            "schemas": all_schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a schema that exists.
    #[test]
    fn references_resolve() {
        let doc = document("http://localhost");
        let schemas = doc["components"]["schemas"].as_object().unwrap().clone();
        let text = doc.to_string();
        for (at, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[at + 21..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        assert_eq!(
            doc["paths"]["/customers"]["post"]["operationId"],
            "createCustomer"
        );
    }
}
