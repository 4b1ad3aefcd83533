//! Group commit: messages of many sessions committed together are each durable when
//! their session hears `250`, and one bad message in a batch refuses only itself.

use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use std::net::{IpAddr, Ipv4Addr};

use mailbridge_core::{
    group_commit::GroupCommit,
    queue::{self, MessageKind, NewMessage},
};
use uuid::Uuid;

use crate::harness::TestApp;

fn message(tenant: TenantId, id: MessageId, n: usize) -> NewMessage {
    NewMessage {
        id,
        tenant_id: tenant,
        device_id: None,
        mail_from: "scanner@praxis.example".into(),
        rcpt_to: vec![format!("r{n}@praxis.example")],
        client_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls_protocol: Some("TLSv1_3".into()),
        tls_cipher: None,
        kind: MessageKind::Device,
        subject: Some(format!("Scan {n}")),
        body: format!("Subject: Scan {n}\r\n\r\nBefund {n}\r\n").into_bytes(),
    }
}

#[tokio::test]
async fn a_batch_commits_everything_or_refuses_only_the_bad_message() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Batch").await.tenant.id;
    let committer = GroupCommit::start(app.pool().clone(), app.master_key().clone());
    let taken = Uuid::now_v7();
    committer
        .enqueue(message(tenant, taken.into(), 0))
        .await
        .expect("the first commits");

    // Many at once: they share transactions; one reuses a queue id that exists.
    let mut sends = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for n in 1..=200 {
        let id = if n == 100 { taken } else { Uuid::now_v7() };
        ids.push((n, id));
        let committer = committer.clone();
        sends.spawn(async move { (n, committer.enqueue(message(tenant, id.into(), n)).await) });
    }
    let mut refused = Vec::new();
    while let Some(result) = sends.join_next().await {
        let (n, outcome) = result.unwrap();
        match outcome {
            Ok(id) => {
                // Acknowledged means durable: the row and its body are there.
                let body = queue::body(app.pool(), app.master_key(), id)
                    .await
                    .unwrap()
                    .expect("its body");
                assert!(
                    String::from_utf8(body)
                        .unwrap()
                        .contains(&format!("Befund {n}"))
                );
            }
            Err(_) => refused.push(n),
        }
    }
    assert_eq!(
        refused,
        [100],
        "only the message with the taken id is refused"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(stored, 200, "the first and the 199 good ones");
    let batched = mailbridge_core::metrics::metrics()
        .edge
        .commit_batch
        .get_sample_count();
    assert!(batched > 0, "some messages were committed together");
    app.stack.shutdown().await;
}

#[tokio::test]
async fn devices_last_seen_are_written_together_and_at_shutdown() {
    use lettre::AsyncTransport;
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Gesehen").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let mailbox = tenant.tenant.sender_mailbox.clone();
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec!["empfang@praxisgesehen.example".parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, b"Subject: x\r\n\r\nx")
        .await
        .expect("accepted");
    // Not written per session but with the next flush, or when the edge stops.
    let pool = app.pool().clone();
    app.stack.shutdown().await;
    let (at, addr): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as("SELECT last_seen_at, host(last_seen_addr) FROM devices WHERE id = $1")
            .bind(device.device.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        at.is_some(),
        "the edge wrote what it had seen when it stopped"
    );
    assert_eq!(addr.as_deref(), Some("127.0.0.1"));
}
