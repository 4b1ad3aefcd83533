//! The OpenAPI 3.1 document of `/api/v1`, derived from the code with utoipa. Each
//! handler's `#[utoipa::path]` names its method, path, operation id, summary, least
//! role (`x-mailbridge-role`), query parameters and bodies; the bodies' schemas are
//! derived from the very serde types the handlers answer with, so the document cannot
//! drift from the implementation. What every operation shares is added here once: the
//! bearer API token, the path ids, the JSON error answers and the role in words. The
//! end-to-end tests call every documented operation against the running server and
//! check its status and the documented fields.

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::{alerts, api, board, connection, device_bulk, device_import, least_privilege, usage};

/// The extension naming the least role that may call an operation.
pub const ROLE: &str = "x-mailbridge-role";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailbridge API",
        description = "Everything the mailbridge control plane can do, for automation. Authenticate with an API token created under API tokens: `Authorization: Bearer mbt_…`."
    ),
    paths(
        api::list_customers,
        api::create_customer,
        api::get_customer,
        api::update_customer,
        api::delete_customer,
        api::consent_link,
        connection::status,
        least_privilege::api_script,
        api::test_message,
        api::list_devices,
        api::create_device,
        device_import::api_import,
        device_bulk::api_bulk,
        api::get_device,
        api::update_device,
        api::delete_device,
        api::rotate_device,
        api::device_logins,
        api::device_transcripts,
        api::unlock_device,
        api::list_messages,
        api::get_message,
        api::retry_message,
        api::cancel_message,
        api::list_holds,
        api::probe_hold,
        api::list_audit,
        board::api_import,
        board::api_board,
        board::api_device,
        board::api_link,
        board::api_ignore,
        board::api_reopen,
        board::api_readiness,
        board::export_csv,
        alerts::api_list,
        alerts::api_acknowledge,
        alerts::api_webhooks,
        alerts::api_create_webhook,
        alerts::api_webhook_deliveries,
        alerts::api_test_webhook,
        usage::api_usage,
    ),
    components(schemas(api::ApiError, mailbridge_core::webhooks::Payload)),
    security(("apiToken" = []))
)]
struct ApiDoc;

/// The whole document, as served at `/api/v1/openapi.json`.
pub fn document(public_url: &str) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["servers"] = json!([{ "url": format!("{public_url}/api/v1") }]);
    doc["components"]["securitySchemes"] = json!({
        "apiToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (mbt_…) created in the control plane; it acts with its role",
        },
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(operations) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in operations.iter_mut() {
                share(path, method, operation);
            }
        }
    }
    doc
}

/// Adds to one operation what every operation has: its role in words, its path
/// ids, and the error answers it may give.
fn share(path: &str, method: &str, operation: &mut Value) {
    // utoipa tags an operation with its handler's module: internal, not for readers.
    if let Some(fields) = operation.as_object_mut() {
        fields.remove("tags");
    }
    let role = operation[ROLE].as_str().unwrap_or("owner").to_owned();
    operation["description"] = json!(format!("Needs the role {role} or higher."));

    let mut parameters: Vec<Value> = path_ids(path)
        .into_iter()
        .map(|(name, description)| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": { "type": "string", "format": "uuid" },
            })
        })
        .collect();
    if let Some(query) = operation["parameters"].as_array() {
        parameters.extend(query.iter().cloned());
    }
    let pages = parameters.iter().any(|p| p["name"] == "offset");
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }

    let takes_body = operation.get("requestBody").is_some();
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    let mut error = |status: &str, description: &str| {
        responses.insert(
            status.to_owned(),
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
            }),
        );
    };
    error(
        "401",
        "No API token, or one unknown, revoked, expired, or whose creator is disabled or no longer holds its role",
    );
    error("403", "The token's role does not allow this");
    if pages {
        error(
            "400",
            "A bad query parameter: error.parameter names it (invalid_parameter)",
        );
    }
    if path.contains('{') {
        error(
            "404",
            "No such customer, device, message, hold, alert or webhook",
        );
    }
    if takes_body || method == "post" {
        error("409", "Conflicts with the current state");
        error("422", "Invalid input; the message says what to change");
    }
}

/// The ids in a path (`{id}`, `{device}`) with what they name: `{id}` the thing of
/// the segment before it (`/customers/{id}`: a customer).
fn path_ids(path: &str) -> Vec<(String, String)> {
    let segments: Vec<&str> = path.split('/').collect();
    segments
        .iter()
        .enumerate()
        .filter_map(|(at, segment)| {
            let name = segment.strip_prefix('{')?.strip_suffix('}')?;
            let thing = match name {
                "id" => at
                    .checked_sub(1)
                    .and_then(|before| segments.get(before))
                    .map(|s| s.trim_end_matches('s'))
                    .unwrap_or("object"),
                other => other,
            };
            Some((name.to_owned(), format!("The {thing}'s id")))
        })
        .collect()
}

/// The document's operations: (method, path, operation).
#[cfg(test)]
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a schema that exists.
    #[test]
    fn references_resolve() {
        let doc = document("http://localhost");
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap().clone();
        let text = doc.to_string();
        for (at, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[at + 21..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        assert_eq!(
            doc["paths"]["/customers"]["post"]["operationId"],
            "createCustomer"
        );
        assert!(schemas.contains_key("WebhookEvent"));
        assert!(!doc.to_string().contains("\"tags\""));
        assert_eq!(
            doc["components"]["securitySchemes"]["apiToken"]["scheme"],
            "bearer"
        );
    }

    /// Every operation names its least role, has one success answer, and documents
    /// each of its path ids; operation ids are unique.
    #[test]
    fn every_operation_is_complete() {
        let doc = document("http://localhost");
        let mut ids = std::collections::BTreeSet::new();
        for (method, path, operation) in operations(&doc) {
            let role = operation[ROLE].as_str().unwrap_or_default();
            assert!(
                ["readonly", "technician", "admin", "owner"].contains(&role),
                "{method} {path}: role {role:?}"
            );
            assert!(
                operation["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("role {role} ")),
                "{method} {path}"
            );
            let successes = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|status| status.starts_with('2'))
                .count();
            assert_eq!(successes, 1, "{method} {path}");
            for (name, _) in path_ids(&path) {
                assert!(
                    operation["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name.as_str() && p["in"] == "path"),
                    "{method} {path}: {name}"
                );
            }
            let id = operation["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "operation id {id} twice");
        }
        assert_eq!(ids.len(), 42);
    }
}
