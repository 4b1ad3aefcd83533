//! Defects of a first walk-through of the control plane (issue 21): a customer set up
//! by the CLI shows as connected once its mail is delivered, new devices read "never
//! seen", and customer names differing only in case are refused.

use lettre::AsyncTransport;

use crate::{
    harness::{TestApp, sample_message, without_final_crlf},
    staff_client::{Page, StaffClient},
};

/// The overview's row of `customer`, tags stripped.
fn overview_row(page: &Page, customer: uuid::Uuid) -> String {
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
