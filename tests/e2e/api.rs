//! The JSON API: API tokens made in the control plane, every operation of the
//! OpenAPI document called against the running server (status and documented fields
//! checked, so the document cannot drift), role refusals, JSON errors, cursors.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{harness::TestApp, staff_client::StaffClient};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match body {
            Some(Value::String(csv)) => {
                request = request.header("content-type", "text/csv").body(csv.clone())
            }
            Some(body) => request = request.json(body),
            None => {}
        }
        let response = request.send().await.expect("API call");
        let status = response.status();
        let response_is_csv = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/csv"));
        let text = response.text().await.unwrap();
        let csv = response_is_csv;
        let value = if text.is_empty() {
            Value::Null
        } else if csv {
            Value::String(text)
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }
}

/// The Microsoft 365 tenant of the customer the API creates.
const API_TENANT: &str = "3c9a5e1d-7b2f-4e8a-9d61-0f4b2a7c8e15";

/// Creates an API token in the control plane; returns the token.
async fn token(staff: &mut StaffClient, name: &str, role: &str) -> String {
    let page = staff
        .post("/api-tokens", &[("name", name), ("role", role)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.text_of("api-token").expect("the token, shown once")
}

/// Checks that `value` has every property the schema `name` requires, and the
/// objects in it (fields and list items) against their own schemas.
fn conforms(doc: &Value, name: &str, value: &Value) {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    conforms_to(doc, name, schema, value);
}

/// `conforms` for one schema object: a `$ref`, an `allOf` (a type with flattened
/// parts) or an object with its required fields and properties.
fn conforms_to(doc: &Value, name: &str, schema: &Value, value: &Value) {
    if let Some(reference) = schema["$ref"].as_str() {
        return conforms(doc, reference.rsplit('/').next().unwrap(), value);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        conforms_to(doc, name, part, value);
    }
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        assert!(value.get(field).is_some(), "{name} lacks {field}: {value}");
    }
    for (field, property) in schema["properties"].as_object().into_iter().flatten() {
        let Some(inner) = value.get(field) else {
            continue;
        };
        // Lists: their items against the item schema.
        if let (Some(reference), Some(items)) =
            (property["items"]["$ref"].as_str(), inner.as_array())
        {
            let item_schema = reference.rsplit('/').next().unwrap();
            for item in items {
                conforms(doc, item_schema, item);
            }
        }
        // Objects (or null where the schema allows it): against their schema.
        let reference = property["$ref"].as_str().or_else(|| {
            property["oneOf"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|one| one["$ref"].as_str())
        });
        if let (Some(reference), true) = (reference, inner.is_object()) {
            conforms(doc, reference.rsplit('/').next().unwrap(), inner);
        }
    }
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let app = TestApp::spawn_without_worker().await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let admin = token(&mut owner, "RMM", "admin").await;
    let readonly = token(&mut owner, "Dashboard", "readonly").await;
    assert!(admin.starts_with("mbt_"));
    let tokens = owner.get("/api-tokens").await;
    assert!(!tokens.body.contains(&admin), "a token is shown only once");
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}/api/v1", app.stack.web_addr),
    };
    let (status, doc) = api.call(None, "get", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }

    // Without a token, or with an unknown one: 401 for everything.
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{device}", &uuid::Uuid::new_v4().to_string());
        let (status, body) = api.call(None, method, &concrete, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        let (status, _) = api.call(Some("mbt_made-up"), method, &concrete, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }

    let mut exercised = BTreeSet::new();
    let bodies = |schema: &str| -> Value {
        match schema {
            "CustomerInput" => {
                json!({ "name": "Praxis API", "sender_mailbox": "scanner@praxis-api.example", "entra_tenant_id": API_TENANT })
            }
            "CustomerPatch" => {
                json!({ "rate_limit_per_minute": 30, "notification_address": "it@msp.example" })
            }
            "TestMessage" => json!({ "recipient": "empfang@praxis-api.example" }),
            "DeviceInput" => {
                json!({ "name": "Scanner API", "kind": "scanner", "allowed_networks": ["192.0.2.0/24"], "enabled": true })
            }
            "DeviceImport" => {
                json!({ "csv": "name,kind,site,listener,allow-list,sender\nFax Import,other,Empfang,relay,192.0.2.40,\nScanner Import,scanner,Labor,587,,scan@praxis-api.example\n" })
            }
            "BulkDevices" => json!({ "action": "rotate", "devices": ["{device}"] }),
            "BoardAction" => {
                json!({ "account": "fax@praxis-api.example", "device_id": "{device}", "reason": "switched to OAuth natively" })
            }
            "WebhookInput" => json!({ "name": "PSA", "url": "https://psa.example.com/mailbridge" }),
            other => panic!("no example body for {other}"),
        }
    };
    // In an order that creates what later operations need; deletions last.
    let order = [
        ("get", "/customers"),
        ("post", "/customers"),
        ("get", "/customers/{id}"),
        ("patch", "/customers/{id}"),
        ("post", "/customers/{id}/consent"),
        ("get", "/customers/{id}/connection"),
        ("get", "/customers/{id}/exchange-script"),
        ("post", "/customers/{id}/test-message"),
        ("get", "/customers/{id}/devices"),
        ("post", "/customers/{id}/devices"),
        ("get", "/customers/{id}/devices/{device}"),
        ("patch", "/customers/{id}/devices/{device}"),
        ("post", "/customers/{id}/devices/{device}/rotate"),
        ("post", "/customers/{id}/devices/import"),
        ("post", "/customers/{id}/devices/bulk"),
        ("get", "/customers/{id}/devices/{device}/logins"),
        ("get", "/customers/{id}/devices/{device}/transcripts"),
        ("post", "/customers/{id}/devices/{device}/unlock"),
        ("get", "/messages"),
        ("get", "/messages/{id}"),
        ("post", "/messages/{id}/retry"),
        ("post", "/messages/{id}/cancel"),
        ("get", "/holds"),
        ("post", "/holds/{id}/probe"),
        ("get", "/audit"),
        ("post", "/customers/{id}/smtp-auth-report"),
        ("get", "/customers/{id}/board"),
        ("post", "/customers/{id}/board/device"),
        ("post", "/customers/{id}/board/link"),
        ("post", "/customers/{id}/board/ignore"),
        ("post", "/customers/{id}/board/reopen"),
        ("get", "/readiness"),
        ("get", "/board.csv"),
        ("get", "/alerts"),
        ("post", "/alerts/{id}/acknowledge"),
        ("get", "/webhooks"),
        ("post", "/webhooks"),
        ("get", "/webhooks/{id}/deliveries"),
        ("post", "/webhooks/{id}/test"),
        ("get", "/usage"),
        ("delete", "/customers/{id}/devices/{device}"),
        ("delete", "/customers/{id}"),
    ];
    let mut customer = String::new();
    let mut device = String::new();
    let mut message = String::new();
    let mut hold = String::new();
    let mut webhook = String::new();
    // An open alert of the customer (what a worker's evaluation writes).
    let mut alert = String::new();
    for (method, path) in order {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let concrete = if path.starts_with("/messages/") {
            path.replace("{id}", &message)
        } else if path.starts_with("/holds/") {
            path.replace("{id}", &hold)
        } else if path.starts_with("/webhooks/") {
            path.replace("{id}", &webhook)
        } else if path.starts_with("/alerts/") {
            path.replace("{id}", &alert)
        } else {
            path.replace("{id}", &customer).replace("{device}", &device)
        };
        let body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .map(|r| bodies(r.rsplit('/').next().unwrap()))
            .map(|b| serde_json::from_str(&b.to_string().replace("{device}", &device)).unwrap())
            .or_else(|| {
                // The report upload: the CSV as exported from the Exchange admin center.
                operation["requestBody"]["content"]["text/csv"].is_object().then(|| {
                    Value::String("Sender address,Messages sent,Authentication protocol\r\nfax@praxis-api.example,12,Basic\r\n".into())
                })
            });
        let role_needed = operation["x-mailbridge-role"].as_str().unwrap();
        assert!(
            operation["description"]
                .as_str()
                .unwrap()
                .contains(&format!("role {role_needed} ")),
            "{method} {path}: {operation}"
        );
        // The read-only token may only read.
        let (status, refusal) = api
            .call(Some(&readonly), method, &concrete, body.as_ref())
            .await;
        if role_needed == "readonly" {
            assert_eq!(
                status,
                StatusCode::OK,
                "{method} {path} for read-only: {refusal}"
            );
        } else {
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} for read-only: {refusal}"
            );
            assert_eq!(refusal["error"]["code"], "forbidden");
        }
        let (status, answer) = api
            .call(Some(&admin), method, &concrete, body.as_ref())
            .await;
        let (documented_status, success) = operation["responses"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(code, _)| code.starts_with('2'))
            .unwrap();
        assert_eq!(
            status.as_str(),
            documented_status,
            "{method} {path}: {answer}"
        );
        if let Some(reference) = success["content"]["application/json"]["schema"]["$ref"].as_str() {
            conforms(&doc, reference.rsplit('/').next().unwrap(), &answer);
        } else if success["content"]["text/csv"].is_object() {
            assert!(
                answer
                    .as_str()
                    .is_some_and(|csv| csv.starts_with("customer,account,state")),
                "{answer}"
            );
        } else {
            assert_eq!(answer, Value::Null, "{method} {path} has no body");
        }
        match (method, path) {
            ("post", "/customers") => {
                customer = answer["id"].as_str().unwrap().to_owned();
                // The customer's consent was revoked: its deliveries are held
                // (what a worker records), its next probe an hour away.
                let id: uuid::Uuid = sqlx::query_scalar(
                    "INSERT INTO delivery_holds (scope, subject, tenant_id, reason, detail, next_probe_at)
                     VALUES ('customer', $1, $1::uuid, 'AADSTS65001', 'AADSTS65001: consent revoked', now() + interval '1 hour')
                     RETURNING id",
                )
                .bind(&customer)
                .fetch_one(app.pool())
                .await
                .unwrap();
                hold = id.to_string();
                let id: uuid::Uuid = sqlx::query_scalar(
                    "INSERT INTO alerts (kind, subject, tenant_id, severity, facts)
                     VALUES ('customer_token', $1, $1::uuid, 'critical', '{\"customer\": \"Praxis API\", \"error\": \"AADSTS65001\"}')
                     RETURNING id",
                )
                .bind(&customer)
                .fetch_one(app.pool())
                .await
                .unwrap();
                alert = id.to_string();
            }
            ("post", "/webhooks") => {
                webhook = answer["webhook"]["id"].as_str().unwrap().to_owned();
                assert!(answer["secret"].as_str().unwrap().starts_with("whsec_"));
            }
            ("post", "/alerts/{id}/acknowledge") => {
                assert_eq!(answer["acknowledged_by"], "api-token:RMM");
            }
            ("get", "/usage") => {
                assert!(
                    answer["customers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["customer"] == "Praxis API")
                );
            }
            ("post", "/customers/{id}/devices") => {
                device = answer["id"].as_str().unwrap().to_owned();
                assert!(answer["password"].as_str().unwrap().len() >= 20);
            }
            ("post", "/customers/{id}/test-message") => {
                message = answer["queue_id"].as_str().unwrap().to_owned()
            }
            ("patch", "/customers/{id}") => assert_eq!(answer["rate_limit_per_minute"], 30),
            ("post", "/customers/{id}/devices/import") => {
                let devices = answer["devices"].as_array().unwrap();
                assert_eq!(devices.len(), 2, "{answer}");
                assert_eq!(
                    devices[0]["password"],
                    Value::Null,
                    "a relay device has no password"
                );
                assert!(devices[1]["password"].as_str().unwrap().len() >= 20);
            }
            ("post", "/customers/{id}/devices/bulk") => {
                assert_eq!(answer["devices"][0]["device_id"], device.as_str());
                assert!(answer["devices"][0]["password"].as_str().unwrap().len() >= 20);
            }
            ("patch", "/customers/{id}/devices/{device}") => assert_eq!(answer["enabled"], true),
            ("get", "/customers/{id}/devices/{device}/logins") => {
                assert_eq!(answer["logins"], json!([]), "no failed logins yet")
            }
            ("get", "/customers/{id}/devices/{device}/transcripts") => {
                assert_eq!(
                    answer["transcripts"],
                    json!([]),
                    "the device never connected"
                )
            }
            ("post", "/customers/{id}/devices/{device}/unlock") => {
                assert_eq!(answer["unlocked"], false, "nothing was locked")
            }
            ("post", "/customers/{id}/consent") => {
                let url = answer["consent_url"].as_str().unwrap();
                assert!(
                    url.contains(&format!("/{API_TENANT}/v2.0/adminconsent?client_id=")),
                    "the link is bound to the customer's tenant: {url}"
                );
            }
            ("get", "/customers/{id}/connection") => {
                assert_eq!(answer["state"], "not_connected", "{answer}");
                assert_eq!(answer["check"], Value::Null, "no consent granted yet");
            }
            ("get", "/messages/{id}") => assert_eq!(answer["state"], "queued"),
            ("get", "/holds") => {
                let held = &answer["holds"][0];
                assert_eq!(held["id"], hold.as_str());
                assert_eq!(held["scope"], "customer");
                assert_eq!(held["customer_id"], customer.as_str());
                assert_eq!(held["reason"], "AADSTS65001");
                assert!(
                    held["explanation"]["de"]["what"]
                        .as_str()
                        .unwrap()
                        .contains("Zustimmung")
                );
            }
            ("post", "/holds/{id}/probe") => {
                let due: bool = sqlx::query_scalar(
                    "SELECT next_probe_at <= now() FROM delivery_holds WHERE id = $1::uuid",
                )
                .bind(&hold)
                .fetch_one(app.pool())
                .await
                .unwrap();
                assert!(due, "retry now makes the hold's probe due");
            }
            ("get", "/audit") => {
                let actions: Vec<&str> = answer["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["action"].as_str().unwrap())
                    .collect();
                assert!(
                    actions.contains(&"device.create")
                        && actions.contains(&"device.unlock")
                        && actions.contains(&"message.cancel")
                        && actions.contains(&"hold.probe"),
                    "{actions:?}"
                );
                let actors: Vec<&str> = answer["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["actor"].as_str().unwrap())
                    .collect();
                assert!(actors.contains(&"api-token:RMM"));
            }
            _ => {}
        }
        exercised.insert((method.to_owned(), path.to_owned()));
    }
    assert_eq!(
        exercised, documented,
        "every documented operation was called"
    );

    // An import with a bad line: the dry run names it, the import refuses the file.
    let bad = json!({ "csv": "name,kind\nDrucker Neu,printer\nKaffeemaschine,toaster\n", "dry_run": true });
    let (status, answer) = api
        .call(
            Some(&admin),
            "post",
            "/customers",
            Some(&json!({ "name": "Praxis Import", "sender_mailbox": "scan@import.example" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let import = format!(
        "/customers/{}/devices/import",
        answer["id"].as_str().unwrap()
    );
    let (status, checked) = api.call(Some(&admin), "post", &import, Some(&bad)).await;
    assert_eq!(status, StatusCode::OK, "{checked}");
    assert_eq!(checked["valid"], false);
    assert_eq!(checked["lines"][0]["errors"], json!([]));
    assert!(
        checked["lines"][1]["errors"][0]
            .as_str()
            .unwrap()
            .contains("toaster")
    );
    let mut refused = bad.clone();
    refused["dry_run"] = json!(false);
    let (status, answer) = api
        .call(Some(&admin), "post", &import, Some(&refused))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 3"),
        "{answer}"
    );
    let (_, devices) = api
        .call(Some(&admin), "get", &import.replace("/import", ""), None)
        .await;
    assert_eq!(devices["devices"], json!([]), "nothing was created");

    // A consent link to send is bound to the customer's tenant: none without one,
    // and an answer naming another (already consented) tenant is refused.
    let (status, answer) = api
        .call(
            Some(&admin),
            "post",
            "/customers",
            Some(&json!({ "name": "Praxis Ohne Mandant", "sender_mailbox": "scan@ohne.example" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let unbound = answer["id"].as_str().unwrap();
    let (status, answer) = api
        .call(
            Some(&admin),
            "post",
            &format!("/customers/{unbound}/consent"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let other = app.add_tenant("Praxis Andere").await;
    let (_, bound) = api
        .call(
            Some(&admin),
            "post",
            "/customers",
            Some(&json!({ "name": "Praxis Gebunden", "sender_mailbox": "scan@gebunden.example", "entra_tenant_id": API_TENANT })),
        )
        .await;
    let customer = bound["id"].as_str().expect("created").to_owned();
    let (status, answer) = api
        .call(
            Some(&admin),
            "post",
            &format!("/customers/{customer}/consent"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let link = answer["consent_url"].as_str().unwrap();
    let state = link
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("state="))
        .unwrap()
        .to_owned();
    let tampered = reqwest::Client::new()
        .get(format!(
            "{}/consent/callback",
            api.base.trim_end_matches("/api/v1")
        ))
        .query(&[
            ("admin_consent", "True"),
            ("tenant", &other.tenant.entra_tenant_id.unwrap().to_string()),
            ("state", &state),
        ])
        .send()
        .await
        .unwrap();
    let page = tampered.text().await.unwrap();
    assert!(
        page.contains("different Microsoft 365 tenant"),
        "the tampered link is refused: {page}"
    );
    let (_, still) = api
        .call(Some(&admin), "get", &format!("/customers/{customer}"), None)
        .await;
    assert_eq!(still["entra_tenant_id"], API_TENANT);

    // Revoked tokens stop working.
    let token_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM api_tokens WHERE name = 'Dashboard'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    let revoked = owner
        .post(&format!("/api-tokens/{token_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let (status, _) = api.call(Some(&readonly), "get", "/customers", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stack.shutdown().await;
}

#[tokio::test]
async fn api_errors_are_json_and_lists_page_with_a_cursor() {
    let app = TestApp::spawn_without_worker().await;
    let a = app.add_tenant("Praxis A").await;
    let b = app.add_tenant("Praxis B").await;
    let device_b = app.add_device(&b, "Scanner B").await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let admin = token(&mut owner, "PSA", "admin").await;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}/api/v1", app.stack.web_addr),
    };

    let (status, body) = api
        .call(
            Some(&admin),
            "post",
            "/customers",
            Some(&json!({ "name": "X", "sender_mailbox": "kein-postfach" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kein-postfach")
    );
    let (status, body) = api
        .call(
            Some(&admin),
            "post",
            "/customers",
            Some(&json!({ "name": "Praxis A", "sender_mailbox": "a@b.example" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let (status, body) = api
        .call(
            Some(&admin),
            "post",
            "/customers",
            Some(&json!({ "name": 5 })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = api.call(Some(&admin), "get", "/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    // B's device is not reachable under A.
    for method in ["get", "patch", "delete"] {
        let body = (method == "patch").then(|| json!({ "enabled": false }));
        let (status, _) = api
            .call(
                Some(&admin),
                method,
                &format!("/customers/{}/devices/{}", a.tenant.id, device_b.device.id),
                body.as_ref(),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    let (status, _) = api
        .call(
            Some(&admin),
            "post",
            &format!(
                "/customers/{}/devices/{}/rotate",
                a.tenant.id, device_b.device.id
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Five messages, pages of two.
    for n in 0..5 {
        let (status, _) = api
            .call(
                Some(&admin),
                "post",
                &format!("/customers/{}/test-message", a.tenant.id),
                Some(&json!({ "recipient": format!("r{n}@praxisa.example") })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(a) => format!("/messages?limit=2&after={a}"),
            None => "/messages?limit=2".into(),
        };
        let (_, page) = api.call(Some(&admin), "get", &query, None).await;
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= 2);
        seen.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        5,
        "no message on two pages"
    );
    let (_, page) = api
        .call(
            Some(&admin),
            "get",
            "/messages?recipient=r3@praxisa.example",
            None,
        )
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let (_, page) = api
        .call(
            Some(&admin),
            "get",
            &format!("/messages?customer={}&state=queued", b.tenant.id),
            None,
        )
        .await;
    assert!(page["messages"].as_array().unwrap().is_empty());
    let (status, body) = api
        .call(Some(&admin), "get", "/messages?state=lost", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = api
        .call(Some(&admin), "get", "/messages?from=yesterday", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stack.shutdown().await;
}

/// The customer and device lists at an MSP's scale: thousands of customers (seeded
/// in SQL), searched, sorted and paged like their pages, with a bounded limit and a
/// 400 naming each bad parameter; the device list carries each device's health.
#[tokio::test]
async fn customer_and_device_lists_search_sort_and_page_at_scale() {
    use crate::harness::SmtpProbe;
    const SEEDED: i64 = 3_000;
    let app = TestApp::spawn_with_clear_auth(|s| {
        s.edge.auth_throttle.lockout_failures = 3;
    })
    .await;
    let pool = app.pool();
    sqlx::query(
        "INSERT INTO tenants (name, entra_tenant_id, sender_mailbox)
         SELECT format('Kette %s', lpad(g::text, 4, '0')), gen_random_uuid(),
                format('scanner%s@kette%s.example', g, g)
           FROM generate_series(1, $1) g",
    )
    .bind(SEEDED)
    .execute(pool)
    .await
    .unwrap();
    // Two of them have been seen: they sort last by last_seen, the later last.
    sqlx::query(
        "INSERT INTO devices (tenant_id, name, username, password_hash, last_seen_at)
         SELECT id, 'Drucker', 'seen-' || name, 'x',
                CASE name WHEN 'Kette 0005' THEN now() - interval '1 hour' ELSE now() END
           FROM tenants WHERE name IN ('Kette 0005', 'Kette 0007')",
    )
    .execute(pool)
    .await
    .unwrap();
    let practice = app.add_tenant("Praxis Gesund").await;
    let total = SEEDED + 1;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let reader = token(&mut owner, "Dashboard", "readonly").await;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}/api/v1", app.stack.web_addr),
    };
    let get = |path: String| {
        let (api, reader) = (&api, &reader);
        async move {
            let (status, body) = api.call(Some(reader), "get", &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    let names = |body: &Value, list: &str| -> Vec<String> {
        body[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };

    // The first page: 50 by name, and where the next starts.
    let first = get("/customers".into()).await;
    assert_eq!(first["total"], total);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["limit"], 50);
    assert_eq!(first["next_offset"], 50);
    let shown = names(&first, "customers");
    assert_eq!(shown.len(), 50);
    assert_eq!(shown[0], "Kette 0001");
    assert_eq!(shown[49], "Kette 0050");
    // Every customer once, in order, pages of the largest size.
    let mut all = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = get(format!("/customers?limit=200&offset={at}")).await;
        assert_eq!(page["limit"], 200);
        all.extend(names(&page, "customers"));
        offset = page["next_offset"].as_i64();
    }
    assert_eq!(all.len() as i64, total);
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted, "sorted by name, none twice");
    assert_eq!(all.last().unwrap(), "Praxis Gesund");
    let last = get(format!("/customers?limit=200&offset={}", total - 1)).await;
    assert_eq!(names(&last, "customers"), ["Praxis Gesund"]);
    assert_eq!(last["next_offset"], Value::Null);
    let beyond = get("/customers?offset=5000".into()).await;
    assert_eq!(beyond["customers"], json!([]));
    assert_eq!(
        beyond["total"], total,
        "past the end, still how many there are"
    );
    assert_eq!(beyond["next_offset"], Value::Null);

    // Search: a part of the name, or of the sender mailbox; literal wildcards.
    let found = get("/customers?q=kette%2012&limit=200".into()).await;
    assert_eq!(found["total"], 100);
    assert!(
        names(&found, "customers")
            .iter()
            .all(|n| n.starts_with("Kette 12"))
    );
    let found = get("/customers?q=scanner2999%40".into()).await;
    assert_eq!(names(&found, "customers"), ["Kette 2999"]);
    let found = get("/customers?q=%25".into()).await;
    assert_eq!(found["total"], 0);
    assert_eq!(found["customers"], json!([]));

    // Sort: never seen first, the latest seen last.
    let tail = get(format!(
        "/customers?sort=last_seen&offset={}&limit=2",
        total - 2
    ))
    .await;
    assert_eq!(names(&tail, "customers"), ["Kette 0005", "Kette 0007"]);
    let head = get("/customers?sort=last_seen&limit=1".into()).await;
    assert_eq!(names(&head, "customers"), ["Kette 0001"]);

    // Bad values: 400, naming the parameter.
    let bad = [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=viele", "limit"),
        ("offset=-1", "offset"),
        ("offset=10001", "offset"),
        ("offset=1.5", "offset"),
        ("sort=drop", "sort"),
        ("sort=name%3B", "sort"),
    ];
    let long_q = format!("q={}", "x".repeat(201));
    let bad = bad
        .iter()
        .map(|(q, p)| ((*q).to_owned(), *p))
        .chain([(long_q, "q")]);
    let devices_path = format!("/customers/{}/devices", practice.tenant.id);
    for (query, parameter) in bad {
        for list in ["/customers", devices_path.as_str()] {
            let (status, body) = api
                .call(Some(&reader), "get", &format!("{list}?{query}"), None)
                .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{list}?{query}: {}",
                body.get("error").unwrap_or(&Value::Null)
            );
            assert_eq!(body["error"]["code"], "invalid_parameter", "{query}");
            assert_eq!(body["error"]["parameter"], parameter, "{query}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(parameter),
                "{body}"
            );
        }
    }

    // A customer's devices: 120 seeded and two real ones, one of them locked out.
    sqlx::query(
        "INSERT INTO devices (tenant_id, name, username, password_hash, site)
         SELECT $1, format('Gerät %s', lpad(g::text, 3, '0')), format('geraet-%s', g), 'x',
                CASE WHEN g % 2 = 0 THEN 'Labor' ELSE 'Empfang' END
           FROM generate_series(1, 120) g",
    )
    .bind(practice.tenant.id)
    .execute(pool)
    .await
    .unwrap();
    let mfp = app.add_device(&practice, "MFP Empfang").await;
    app.add_device(&practice, "Scanner Labor").await;
    for _ in 0..3 {
        SmtpProbe::login_from(
            app.stack.smtp_addr,
            "127.0.0.7",
            &mfp.device.username,
            "alt",
        )
        .await;
    }
    let mut all = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = get(format!("{devices_path}?offset={at}")).await;
        assert_eq!(page["total"], 122);
        all.extend(names(&page, "devices"));
        offset = page["next_offset"].as_i64();
    }
    assert_eq!(all.len(), 122);
    assert_eq!(all[0], "Gerät 001");
    let labor = get(format!("{devices_path}?q=labor&limit=200")).await;
    assert_eq!(labor["total"], 61);
    // The edge counts failures off the SMTP path: until the lock shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let worst = loop {
        let worst = get(format!("{devices_path}?sort=failures&limit=1")).await;
        if worst["devices"][0]["locked"] == true {
            break worst;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never locked: {worst}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(names(&worst, "devices"), ["MFP Empfang"]);
    let device = &worst["devices"][0];
    assert_eq!(device["id"], json!(mfp.device.id));
    assert_eq!(device["failed_logins_24h"], 3, "{device}");
    assert_eq!(device["last_failed_login_from"], "127.0.0.7", "{device}");
    assert_eq!(device["locked"], true, "{device}");
    assert!(device["locked_until"].is_string(), "{device}");
    assert_eq!(device["last_seen_at"], Value::Null);
    assert_eq!(device["messages_24h"], 0);
    assert_eq!(device["failed_24h"], 0);
    let calm = get(format!("{devices_path}?q=Scanner%20Labor")).await;
    assert_eq!(calm["devices"][0]["locked"], false);
    assert_eq!(calm["devices"][0]["failed_logins_24h"], 0);
    let (status, _) = api
        .call(
            Some(&reader),
            "get",
            &format!("/customers/{}/devices", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stack.shutdown().await;
}
