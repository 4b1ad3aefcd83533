//! Staff limited to the customers they look after: a technician assigned one practice
//! sees no other practice anywhere — lists, pages, forms, the message log, the API
//! with their token — and "not found" is all a guessed id gets.

use mailbridge_core::ids::MessageId;
use mailbridge_core::queue::{self, MessageKind, NewMessage};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::{
    harness::{TestApp, TestTenant},
    staff_client::StaffClient,
};

/// Queues a message for `tenant` with `subject`; returns its id.
async fn queue_message(app: &TestApp, tenant: &TestTenant, subject: &str) -> MessageId {
    let id = MessageId::now();
    let sender = tenant.tenant.sender_mailbox.clone();
    queue::enqueue(
        app.pool(),
        app.master_key(),
        &NewMessage {
            id,
            tenant_id: tenant.tenant.id,
            device_id: None,
            mail_from: sender.clone(),
            rcpt_to: vec!["labor@klinik.example".into()],
            client_addr: "192.0.2.7".parse().unwrap(),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Device,
            subject: Some(subject.into()),
            body: format!("From: {sender}\r\nSubject: {subject}\r\n\r\nBefund\r\n").into_bytes(),
        },
    )
    .await
    .unwrap();
    id
}

async fn api_get(app: &TestApp, token: &str, path: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/v1{path}", app.stack.web_addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("API call");
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_technician_limited_to_one_practice_sees_no_other() {
    let app = TestApp::spawn().await;
    let nord = app.add_tenant("Praxis Nordstadt").await;
    let sued = app.add_tenant("Praxis Suedstadt").await;
    let nord_device = app.add_device(&nord, "Scanner Nord").await;
    let sued_device = app.add_device(&sued, "Scanner Sued").await;
    let nord_message = queue_message(&app, &nord, "Befund Nordstadt").await;
    let sued_message = queue_message(&app, &sued, "Befund Suedstadt").await;

    let mut owner = StaffClient::sign_in_as(&app, "inhaberin@msp.example", "owner").await;
    let mut tech = StaffClient::sign_in_as(&app, "techniker@msp.example", "technician").await;
    let (_, token) = mailbridge_web::create_api_token(
        app.pool(),
        "techniker@msp.example",
        "Skript Nord",
        mailbridge_web::Role::Technician,
        30,
    )
    .await
    .unwrap();
    let tech_id: Uuid =
        sqlx::query_scalar("SELECT id FROM staff WHERE email = 'techniker@msp.example'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    // Not yet limited: both practices.
    assert!(tech.get("/").await.body.contains("Praxis Suedstadt"));

    let (nord_id, sued_id) = (nord.tenant.id.to_string(), sued.tenant.id.to_string());
    let assigned = owner
        .post(
            &format!("/staff/{tech_id}/customers"),
            &[("scope", "assigned"), ("customer", &nord_id)],
        )
        .await;
    assert_eq!(assigned.status, StatusCode::SEE_OTHER, "{}", assigned.body);

    // Pages: only the assigned practice, and "not found" for anything of the other,
    // however its id is spelt.
    let overview = tech.get("/").await;
    assert!(overview.body.contains("Praxis Nordstadt"));
    assert!(!overview.body.contains("Praxis Suedstadt"), "listed");
    let sued_upper = sued_id.to_uppercase();
    let sued_encoded = format!("%{:02X}{}", sued_id.as_bytes()[0], &sued_id[1..]);
    for path in [
        format!("/customers/{sued_id}"),
        format!("/customers/{sued_upper}"),
        format!("/customers/{sued_encoded}"),
        format!("/customers/{sued_id}/devices/{}", sued_device.device.id),
        format!(
            "/customers/{sued_id}/devices/{}/setup",
            sued_device.device.id
        ),
        format!("/messages/{sued_message}"),
    ] {
        let page = tech.get(&path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
        assert!(
            !page.body.contains("Suedstadt"),
            "{path} names the practice"
        );
    }
    let refused = tech
        .post(
            &format!("/customers/{sued_id}/test-message"),
            &[("recipient", "labor@klinik.example")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let retry = tech
        .post(&format!("/messages/{sued_message}/retry"), &[])
        .await;
    assert_eq!(retry.status, StatusCode::NOT_FOUND);
    assert_eq!(
        tech.get(&format!("/customers/{nord_id}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        tech.get(&format!(
            "/customers/{nord_id}/devices/{}",
            nord_device.device.id
        ))
        .await
        .status,
        StatusCode::OK
    );
    let log = tech.get("/messages").await;
    assert!(log.body.contains("Befund Nordstadt"));
    assert!(!log.body.contains("Befund Suedstadt"), "in the message log");
    assert!(
        !log.body.contains("Praxis Suedstadt"),
        "in the customer filter"
    );
    let searched = tech.get(&format!("/messages?customer={sued_id}")).await;
    assert!(!searched.body.contains("Befund Suedstadt"), "by its filter");
    let board = tech.get("/board").await;
    assert_eq!(board.status, StatusCode::OK);
    assert!(board.body.contains("Praxis Nordstadt") && !board.body.contains("Suedstadt"));
    assert_eq!(
        tech.get(&format!("/customers/{sued_id}/board"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The API, with the technician's token: the same.
    let (status, customers) = api_get(&app, &token, "/customers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(customers.contains("Praxis Nordstadt") && !customers.contains("Suedstadt"));
    for path in [
        format!("/customers/{sued_id}"),
        format!("/customers/{sued_id}/devices"),
        format!("/messages/{sued_message}"),
    ] {
        let (status, body) = api_get(&app, &token, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, readiness) = api_get(&app, &token, "/readiness").await;
    assert!(readiness.contains("Praxis Nordstadt") && !readiness.contains("Suedstadt"));
    let (_, messages) = api_get(&app, &token, "/messages").await;
    assert!(messages.contains(&nord_message.to_string()));
    assert!(!messages.contains(&sued_message.to_string()));

    // The owner still sees everything; the change is in the audit log.
    let all = owner.get("/").await;
    assert!(all.body.contains("Praxis Nordstadt") && all.body.contains("Praxis Suedstadt"));
    assert_eq!(
        owner.get(&format!("/messages/{sued_message}")).await.status,
        StatusCode::OK
    );
    let audit = owner.get("/audit").await;
    assert!(audit.body.contains("staff.customers"), "not audited");

    // Owners and admins cannot be limited; back to all customers.
    let owner_id: Uuid =
        sqlx::query_scalar("SELECT id FROM staff WHERE email = 'inhaberin@msp.example'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    let refused = owner
        .post(
            &format!("/staff/{owner_id}/customers"),
            &[("scope", "assigned"), ("customer", &nord_id)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    owner
        .post(&format!("/staff/{tech_id}/customers"), &[("scope", "all")])
        .await;
    assert!(tech.get("/").await.body.contains("Praxis Suedstadt"));
    let (status, _) = api_get(&app, &token, &format!("/customers/{sued_id}")).await;
    assert_eq!(status, StatusCode::OK);
}
