//! What PostgreSQL holds at rest: queued message bodies sealed with the master key,
//! and that key rotated by `mailbridge rotate-master-key` while mail is queued, with
//! nothing lost and nothing left under the old key.

use lettre::{AsyncTransport, address::Envelope};
use mailbridge_core::ids::MessageId;
use mailbridge_core::{crypto::MasterKey, queue, tenants};
use secrecy::{ExposeSecret, SecretString};

use crate::harness::{
    TestApp, database_url, mailbridge_binary, sample_message, without_final_crlf,
};

/// The text `sample_message` puts in every body.
const CONTENT: &str = "Befund für Patient 4711 liegt bei.";

fn rotate(app: &TestApp, current: &str, previous: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(mailbridge_binary());
    command
        .arg("rotate-master-key")
        .env("DATABASE_URL", database_url(&app.database).expose_secret())
        .env("MAILBRIDGE_MASTER_KEY", current)
        .env("RUST_LOG", "warn");
    if let Some(previous) = previous {
        command.env("MAILBRIDGE_MASTER_KEY_PREVIOUS", previous);
    }
    command.output().expect("running rotate-master-key")
}

#[tokio::test]
async fn queued_bodies_are_sealed_and_a_rotated_key_delivers_them_all() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Verschlossen").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let mut sent = Vec::new();
    for i in 0..3 {
        let to = format!("labor{i}@klinik.example");
        let message = sample_message(&sender, &to, &format!("Befund {i}"));
        let envelope =
            Envelope::new(Some(sender.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
        app.lettre(&device.device.username, &device.password)
            .send_raw(&envelope, without_final_crlf(&message))
            .await
            .expect("the edge accepts the message");
        sent.push(to);
    }

    // In PostgreSQL: sealed, nothing of the message readable; its size is the
    // message's own.
    let stored: Vec<(MessageId, Vec<u8>, bool)> =
        sqlx::query_as("SELECT message_id, body, sealed FROM message_bodies")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(stored.len(), 3);
    for (id, raw, sealed) in &stored {
        assert!(sealed, "stored in clear");
        let raw = String::from_utf8_lossy(raw);
        assert!(
            !raw.contains("Befund") && !raw.contains("Subject") && !raw.contains("Patient"),
            "readable at rest: {raw:.120}"
        );
        let opened = queue::body(app.pool(), app.master_key(), *id)
            .await
            .unwrap()
            .expect("stored");
        assert!(String::from_utf8_lossy(&opened).contains(CONTENT));
    }
    // A body queued in clear by the release before sealing is still delivered and
    // gets sealed by the rotation.
    let (legacy_id, _, _) = &stored[0];
    let legacy = queue::body(app.pool(), app.master_key(), *legacy_id)
        .await
        .unwrap()
        .unwrap();
    sqlx::query("UPDATE message_bodies SET body = $2, sealed = false WHERE message_id = $1")
        .bind(legacy_id)
        .bind(&legacy)
        .execute(app.pool())
        .await
        .unwrap();
    // A customer with its own app registration: its client secret is sealed too.
    let own = tenants::create(
        app.pool(),
        Some(app.master_key()),
        tenants::NewTenant {
            name: "Praxis Eigene App".into(),
            entra_tenant_id: Some(uuid::Uuid::new_v4().into()),
            sender_mailbox: "scan@eigene-app.example".into(),
            delivery_method: tenants::DeliveryMethod::Graph,
            own_app: Some(tenants::OwnApp {
                client_id: uuid::Uuid::new_v4().to_string(),
                credential: tenants::AppCredential::ClientSecret(SecretString::from(
                    "eigenes-geheimnis".to_owned(),
                )),
            }),
        },
    )
    .await
    .unwrap();

    // The new key alone cannot open what the old one sealed: the rotation says so
    // and changes nothing.
    let new_key = MasterKey::generate_base64();
    let refused = rotate(&app, &new_key, None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&app.master_key().id())
            && stderr.contains("MAILBRIDGE_MASTER_KEY_PREVIOUS"),
        "{stderr}"
    );
    let unchanged: i64 = sqlx::query_scalar("SELECT count(*) FROM message_bodies WHERE NOT sealed")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(unchanged, 1);

    // With the old key as the previous one, everything is re-sealed.
    let rotated = rotate(&app, &new_key, Some(&app.master_key_base64));
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(report["resealed"]["message_bodies"], 3, "{report}");
    assert_eq!(report["resealed"]["app_credentials"], 1, "{report}");
    assert_eq!(report["left"]["message_bodies"], 0, "{report}");
    let again = rotate(&app, &new_key, Some(&app.master_key_base64));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        report["resealed"]["message_bodies"], 0,
        "a second run has nothing to do"
    );

    // The new key alone now opens everything; the old one nothing.
    let new_only = MasterKey::from_base64(&new_key).unwrap();
    let opened = tenants::own_app(app.pool(), Some(&new_only), own.id)
        .await
        .unwrap()
        .expect("its own app");
    match opened.credential {
        tenants::AppCredential::ClientSecret(secret) => {
            assert_eq!(secret.expose_secret(), "eigenes-geheimnis")
        }
        other => panic!("{other:?}"),
    }
    for (id, _, _) in &stored {
        assert!(
            queue::body(app.pool(), app.master_key(), *id)
                .await
                .is_err()
        );
    }

    // A worker that knows only the new key delivers every message intact.
    let mut worker = app
        .worker_command(&database_url(&app.database), 30)
        .env("MAILBRIDGE_MASTER_KEY", &new_key)
        .spawn()
        .expect("starting a worker");
    for to in &sent {
        let inbox = app.wait_for_inbox(to, 1).await;
        assert!(inbox[0].mime.contains(CONTENT), "{}", inbox[0].mime);
    }
    worker.kill().ok();
    worker.wait().ok();
}
