//! Defects of a first walk-through of the control plane (issue 21): a customer set up
//! by the CLI shows as connected once its mail is delivered, new devices read "never
//! seen", and customer names differing only in case are refused.

use lettre::AsyncTransport;
use mailbridge_core::ids::TenantId;

use crate::{
    harness::{TestApp, sample_message, without_final_crlf},
    staff_client::{Page, StaffClient},
};

/// The overview's row of `customer`, tags stripped.
fn overview_row(page: &Page, customer: TenantId) -> String {
    let at = page
        .body
        .find(&format!("data-customer=\"{customer}\""))
        .expect("the customer's row");
    let row = &page.body[at..];
    let row = &row[..row.find("</tr>").unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for c in row.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn a_customer_set_up_by_the_cli_shows_as_connected_once_a_token_works() {
    let app = TestApp::spawn().await;
    // As `mailbridge tenant add --entra-tenant-id …` does: no consent through mailbridge.
    let tenant = app.add_tenant("Praxis Kommandozeile").await;
    let waiting = app.add_tenant_without_consent("Praxis Wartet").await;
    let customer = tenant.tenant.id;
    let mut staff = StaffClient::sign_in_as(&app, "clara.cli@msp.example", "admin").await;
    let page = staff.get("/").await;
    assert!(
        overview_row(&page, customer).contains("Not connected"),
        "no token yet: {}",
        overview_row(&page, customer)
    );

    let device = app.add_device(&tenant, "Scanner").await;
    let mailbox = tenant.tenant.sender_mailbox.as_str();
    let message = sample_message(mailbox, "empfang@kommandozeile.example", "Befund");
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec!["empfang@kommandozeile.example".parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("accepted");
    app.wait_for_inbox("empfang@kommandozeile.example", 1).await;

    let page = staff.get("/").await;
    let row = overview_row(&page, customer);
    assert!(
        row.contains("Consent OK") && !row.contains("Not connected"),
        "{row}"
    );
    assert!(
        overview_row(&page, waiting.tenant.id).contains("Not connected"),
        "a customer without a working token is still not connected"
    );
    let page = staff.get(&format!("/customers/{customer}")).await;
    assert_eq!(page.text_of("consent-state").unwrap(), "Consent OK");
    assert!(
        page.body.contains("last token issued"),
        "{}",
        page.text_of("connection").unwrap()
    );

    // A token refused after the last good one: connected, but refused.
    sqlx::query("UPDATE tenants SET last_token_error = 'AADSTS7000215', last_token_error_at = now() WHERE id = $1")
        .bind(customer)
        .execute(app.pool())
        .await
        .unwrap();
    let page = staff.get(&format!("/customers/{customer}")).await;
    assert_eq!(page.text_of("consent-state").unwrap(), "Token refused");
    app.stack.shutdown().await;
}

#[tokio::test]
async fn a_new_device_reads_never_seen_and_is_not_stale() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Neu").await;
    let customer = tenant.tenant.id;
    let device = app.add_device(&tenant, "Drucker Empfang").await;
    let mut staff = StaffClient::sign_in_as(&app, "nora.neu@msp.example", "technician").await;

    let row = overview_row(&staff.get("/").await, customer);
    assert!(
        !row.contains("not seen"),
        "a new device is not stale: {row}"
    );
    let page = staff.get(&format!("/customers/{customer}")).await;
    let devices = page.text_of("devices").unwrap_or_else(|| page.body.clone());
    assert!(devices.contains("never seen"), "{devices}");
    assert!(!devices.contains("not seen for 7 days"), "{devices}");
    let device_page = format!("/customers/{customer}/devices/{}", device.device.id);
    assert_eq!(
        staff.get(&device_page).await.text_of("last-seen").unwrap(),
        "never seen"
    );
    let german = staff
        .get_with(&device_page, &[("accept-language", "de")])
        .await;
    assert_eq!(german.text_of("last-seen").unwrap(), "noch nie gesehen");

    // Added more than a week ago and never seen: now it counts as stale.
    sqlx::query("UPDATE devices SET created_at = now() - interval '8 days' WHERE id = $1")
        .bind(device.device.id)
        .execute(app.pool())
        .await
        .unwrap();
    let row = overview_row(&staff.get("/").await, customer);
    assert!(row.contains("1 not seen for 7 days"), "{row}");
    let page = staff.get(&format!("/customers/{customer}")).await;
    assert!(page.body.contains("never seen, added over 7 days ago"));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn customer_names_that_differ_only_in_case_are_refused() {
    use secrecy::ExposeSecret;
    let app = TestApp::spawn_without_worker().await;
    let mut admin = StaffClient::sign_in_as(&app, "cara.case@msp.example", "admin").await;
    let create = |name: &'static str| {
        [
            ("name", name),
            ("sender_mailbox", "scan@praxis-kuehn.example"),
            ("delivery_method", "graph"),
        ]
    };
    let first = admin.post("/customers", &create("Praxis Dr. Kuehn")).await;
    assert_eq!(
        first.status,
        reqwest::StatusCode::SEE_OTHER,
        "{}",
        first.body
    );
    let twin = admin.post("/customers", &create("praxis dr. KUEHN")).await;
    assert_eq!(twin.status, reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        twin.body
            .contains("upper and lower case do not make names different"),
        "{}",
        twin.body
    );
    let german = admin
        .post_with_headers(
            "/customers",
            &create("PRAXIS DR. KUEHN"),
            &[("accept-language", "de")],
        )
        .await;
    assert!(
        german.body.contains("Groß- und Kleinschreibung"),
        "{}",
        german.body
    );
    // A rename onto another customer's name in other case is refused as well.
    let other = admin.post("/customers", &create("Kanzlei Weber")).await;
    let other_id = crate::staff_client::id_in(other.location.as_deref().unwrap(), "/customers/");
    let renamed = admin
        .post(
            &format!("/customers/{other_id}"),
            &[
                ("name", "PRAXIS Dr. Kuehn"),
                ("sender_mailbox", "scan@praxis-kuehn.example"),
                ("delivery_method", "graph"),
            ],
        )
        .await;
    assert!(
        renamed.body.contains("already exists"),
        "{} {}",
        renamed.status,
        renamed.body
    );

    // The API.
    let (_, token) = mailbridge_web::create_api_token(
        app.pool(),
        "cara.case@msp.example",
        "case",
        mailbridge_web::Role::Admin,
        30,
    )
    .await
    .unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/customers", app.stack.web_addr))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "praxis dr. kuehn", "sender_mailbox": "a@b.example" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{body}"
    );

    // The CLI.
    let cli = std::process::Command::new(crate::harness::mailbridge_binary())
        .args([
            "tenant",
            "add",
            "--name",
            "Praxis DR. Kuehn",
            "--entra-tenant-id",
            "5f1c7a52-0d7e-4c5e-9a51-2b7b1d0e8f11",
            "--sender-mailbox",
            "scan@praxis-kuehn.example",
        ])
        .env(
            "DATABASE_URL",
            crate::harness::database_url(&app.database).expose_secret(),
        )
        .env("MAILBRIDGE_MASTER_KEY", "")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!cli.status.success());
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE lower(name) = 'praxis dr. kuehn'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(count, 1);
    app.stack.shutdown().await;
}

#[tokio::test]
async fn the_case_insensitive_index_renames_existing_twins_first() {
    use mailbridge_core::db::MIGRATOR;
    let pool = crate::harness::database_migrated_to(20261202000009).await;
    for (name, age) in [
        ("Praxis Alt", 3),
        ("PRAXIS ALT", 2),
        ("praxis alt", 1),
        ("Praxis Alt (2)", 5),
        ("Kanzlei Einzeln", 1),
    ] {
        sqlx::query(
            "INSERT INTO tenants (name, entra_tenant_id, sender_mailbox, created_at)
             VALUES ($1, gen_random_uuid(), 'scan@alt.example', now() - make_interval(days => $2))",
        )
        .bind(name)
        .bind(age)
        .execute(&pool)
        .await
        .unwrap();
    }
    MIGRATOR
        .run(&pool)
        .await
        .expect("migrates with twins present");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM tenants ORDER BY created_at")
        .fetch_all(&pool)
        .await
        .unwrap();
    // The oldest keeps its name; the others get the next free suffix.
    assert_eq!(
        names,
        [
            "Praxis Alt (2)",
            "Praxis Alt",
            "PRAXIS ALT (3)",
            "praxis alt (4)",
            "Kanzlei Einzeln"
        ]
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE actor = 'migration' AND action = 'customer.update'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 2);
    let twin = sqlx::query(
        "INSERT INTO tenants (name, entra_tenant_id, sender_mailbox) VALUES ('KANZLEI einzeln', gen_random_uuid(), 'a@b.example')",
    )
    .execute(&pool)
    .await
    .expect_err("refused");
    assert_eq!(
        twin.as_database_error().and_then(|e| e.constraint()),
        Some("tenants_name_key")
    );
}
