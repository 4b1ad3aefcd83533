//! Cross-tenant isolation: a device of customer A tries every way to send as, or
//! through, customer B (B's sender in the envelope or the From header, mixed
//! credentials, an AUTH PLAIN authzid naming B's device, B's password from outside
//! B's allow-list, A's address-identified relay device using B's sender, AUTH as B
//! after being identified as A, an address allow-listed for both). Where the edge
//! refuses, it refuses with the right code; where it accepts, the message travels
//! through A's own tenant and mailbox (the sender policy rewrites a foreign From);
//! and nothing from A's devices is ever queued for or delivered through B's tenant.

use mailbridge_core::ids::MessageId;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::{Engine, engine::general_purpose::STANDARD};
use lettre::{AsyncTransport, address::Envelope};
use mailbridge::stack::StackOptions;
use mailbridge_core::{
    devices::{self, DeviceListener, IssuedCredential, PolicyChange, SenderPolicy},
    queue,
};
use mailbridge_m365_sim::DeliveredMessage;
use uuid::Uuid;

use crate::harness::{SmtpProbe, TestApp, TestTenant, sample_message, without_final_crlf};

/// A's relay devices are known by these addresses.
const A_RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 6, 1);
const A_RELAY_ENFORCED: Ipv4Addr = Ipv4Addr::new(127, 0, 6, 2);
/// Allow-listed for a device of A and one of B alike.
const SHARED: Ipv4Addr = Ipv4Addr::new(127, 0, 6, 3);

/// A bare SMTP session from a chosen source address.
struct Session(SmtpProbe);

impl Session {
    /// Connects from `from` and checks the greeting.
    async fn open(to: SocketAddr, from: Ipv4Addr) -> Self {
        let (probe, greeting) = SmtpProbe::connect_from(to, IpAddr::V4(from)).await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        Self(probe)
    }

    /// Sends `line` and asserts the reply starts with `expected`.
    async fn expect(&mut self, line: &str, expected: &str) -> String {
        self.0.expect(line, expected).await
    }

    async fn login(&mut self, authzid: &str, username: &str, password: &str) -> String {
        self.0.login_as(authzid, username, password).await
    }

    /// MAIL, RCPT and DATA; then `message`, whose answer is returned.
    async fn transaction(&mut self, mail_from: &str, rcpt_to: &str, message: &str) -> String {
        self.expect(&format!("MAIL FROM:<{mail_from}>"), "250 2.1.0")
            .await;
        self.expect(&format!("RCPT TO:<{rcpt_to}>"), "250 2.1.5")
            .await;
        self.expect("DATA", "354").await;
        let stuffed = message.replace("\r\n.", "\r\n..");
        self.0.send_raw(format!("{stuffed}.\r\n").as_bytes()).await;
        self.0.reply().await
    }

    /// A message from `from` (envelope and header) to the clinic's reception, which
    /// must be queued: its queue id.
    async fn queue(&mut self, from: &str, subject: &str) -> MessageId {
        let to = "empfang@klinik.example";
        queued(
            &self
                .transaction(from, to, &message(from, to, subject))
                .await,
        )
    }

    async fn quit(mut self) {
        self.expect("QUIT", "221 2.0.0").await;
        assert!(self.0.closed().await, "the edge closes after QUIT");
    }
}

/// The queue id in `250 2.0.0 OK queued as <id>`.
fn queued(reply: &str) -> MessageId {
    let id = reply
        .strip_prefix("250 2.0.0 OK queued as ")
        .unwrap_or_else(|| panic!("not accepted: {reply}"));
    id.trim().parse().unwrap()
}

fn message(from: &str, to: &str, subject: &str) -> String {
    format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nBefund\r\n")
}

struct Customers {
    app: TestApp,
    a: TestTenant,
    b: TestTenant,
    /// A's device with the default policy: a foreign From is rewritten.
    a_device: IssuedCredential,
    /// A's device whose policy refuses any sender but A's own.
    a_enforced: IssuedCredential,
    /// A's device for which A's staff allowed B's domain as a sender.
    a_lists_b: IssuedCredential,
    b_device: IssuedCredential,
    /// B's device that may log in from 10.44.0.0/16 only.
    b_fenced: IssuedCredential,
}

impl Customers {
    async fn set_up() -> Self {
        let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
            s.edge.plaintext_auth_networks = "127.0.0.0/8".parse().unwrap();
        })
        .await;
        let a = app.add_tenant("Praxis Alpha").await;
        let b = app.add_tenant("Praxis Beta").await;
        let a_device = app.add_device(&a, "Scanner").await;
        let a_enforced = app.add_device(&a, "Streng").await;
        policy(
            &app,
            &a_enforced,
            PolicyChange {
                allowed_senders: Some(vec!["@praxisalpha.example".into()]),
                sender_policy: Some(SenderPolicy::Enforce),
                ..Default::default()
            },
        )
        .await;
        let a_lists_b = app.add_device(&a, "Fremd").await;
        policy(
            &app,
            &a_lists_b,
            PolicyChange {
                allowed_senders: Some(vec!["@praxisbeta.example".into()]),
                ..Default::default()
            },
        )
        .await;
        let b_device = app.add_device(&b, "Scanner").await;
        let b_fenced = app.add_device(&b, "Empfang").await;
        policy(&app, &b_fenced, allow_from("10.44.0.0/16")).await;
        let a_relay = app.add_device(&a, "EKG").await;
        policy(&app, &a_relay, allow_from(&format!("{A_RELAY}/32"))).await;
        let a_relay_enforced = app.add_device(&a, "Labor").await;
        policy(
            &app,
            &a_relay_enforced,
            PolicyChange {
                allowed_networks: Some(vec![format!("{A_RELAY_ENFORCED}/32").parse().unwrap()]),
                listener: Some(DeviceListener::Relay),
                sender_policy: Some(SenderPolicy::Enforce),
                ..Default::default()
            },
        )
        .await;
        let a_shared = app.add_device(&a, "Fax").await;
        policy(&app, &a_shared, allow_from(&format!("{SHARED}/32"))).await;
        let b_shared = app.add_device(&b, "Fax").await;
        policy(&app, &b_shared, allow_from(&format!("{SHARED}/32"))).await;
        Self {
            app,
            a,
            b,
            a_device,
            a_enforced,
            a_lists_b,
            b_device,
            b_fenced,
        }
    }

    fn a_sender(&self) -> &str {
        &self.a.tenant.sender_mailbox
    }

    fn b_sender(&self) -> &str {
        &self.b.tenant.sender_mailbox
    }

    fn entra(tenant: &TestTenant) -> Uuid {
        tenant.entra()
    }

    /// A session on the submission port, logged in as `device`.
    async fn logged_in(&self, device: &IssuedCredential) -> Session {
        let mut session = Session::open(self.app.stack.smtp_addr, Ipv4Addr::LOCALHOST).await;
        session.expect("EHLO alpha.praxis.test", "250").await;
        let auth = session
            .login("", &device.device.username, &device.password)
            .await;
        assert!(auth.starts_with("235 2.7.0"), "{auth}");
        session
    }

    /// The delivery of message `id`, once the worker is done with it.
    async fn delivered(&self, id: MessageId) -> DeliveredMessage {
        let done = |m: &queue::MessageStatus| matches!(m.state.as_str(), "accepted" | "failed");
        let status = self.app.wait_for_message(id, done).await;
        assert_eq!(status.state.as_str(), "accepted", "{status:?}");
        let trace = format!(" id {}", id.simple());
        self.app
            .stack
            .simulator
            .directory
            .delivered()
            .into_iter()
            .find(|m| m.mime.contains(&trace))
            .unwrap_or_else(|| panic!("message {id} delivered, but not to the simulator"))
    }

    /// Asserts that message `id` was queued for A and went out through A's tenant,
    /// as A's mailbox.
    async fn delivered_through_a(&self, id: MessageId) -> DeliveredMessage {
        let status = queue::status(self.app.pool(), id).await.unwrap();
        let queued_for = status.map(|s| s.tenant_id);
        assert_eq!(
            queued_for,
            Some(self.a.tenant.id),
            "message {id} queued for another tenant"
        );
        let delivered = self.delivered(id).await;
        assert_eq!(delivered.tenant_id, Self::entra(&self.a), "{delivered:?}");
        assert_eq!(delivered.mailbox, self.a_sender());
        delivered
    }
}

async fn policy(app: &TestApp, device: &IssuedCredential, change: PolicyChange) {
    devices::change_policy(app.pool(), device.device.id, change)
        .await
        .unwrap()
        .expect("the device exists");
}

fn allow_from(network: &str) -> PolicyChange {
    PolicyChange {
        allowed_networks: Some(vec![network.parse().unwrap()]),
        listener: Some(DeviceListener::Relay),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_device_cannot_send_as_or_through_another_customer() {
    let c = Customers::set_up().await;
    let (a_sender, b_sender) = (c.a_sender().to_owned(), c.b_sender().to_owned());
    let b_user = &c.b_device.device.username;
    let mut through_a = Vec::new();

    // B's sender in the envelope and in From, default policy: accepted, but sent as
    // A's mailbox with the From rewritten and B's address kept only as Reply-To.
    let mut session = c.logged_in(&c.a_device).await;
    let rewritten = session.queue(&b_sender, "als Beta").await;
    // B's mailbox as the recipient: ordinary mail from A to B, sent through A.
    let reply = session
        .transaction(
            &a_sender,
            &b_sender,
            &message(&a_sender, &b_sender, "an Beta"),
        )
        .await;
    through_a.push(queued(&reply));
    // An AUTH= parameter naming B's mailbox changes nothing.
    let reply = session
        .transaction(
            &format!("{b_sender}> AUTH=<{b_sender}"),
            "empfang@klinik.example",
            &message(&a_sender, "empfang@klinik.example", "AUTH="),
        )
        .await;
    through_a.push(queued(&reply));
    // Logged in as A, the session cannot become B.
    session
        .expect(
            &format!(
                "AUTH PLAIN {}",
                STANDARD.encode(format!("\0{b_user}\0{}", c.b_device.password))
            ),
            "503 5.5.1 Already authenticated",
        )
        .await;
    session.quit().await;

    // The enforcing device refuses B's sender at MAIL and in the header.
    let mut session = c.logged_in(&c.a_enforced).await;
    session
        .expect(&format!("MAIL FROM:<{b_sender}>"), "550 5.7.1")
        .await;
    let reply = session
        .transaction(
            &a_sender,
            "empfang@klinik.example",
            &message(&b_sender, "empfang@klinik.example", "Kopf Beta"),
        )
        .await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    let reply = session
        .transaction(
            &a_sender,
            "empfang@klinik.example",
            &format!("From: {a_sender}, {b_sender}\r\nSubject: zwei\r\n\r\nBefund\r\n"),
        )
        .await;
    assert!(reply.starts_with("550 5.7.1"), "one of two From: {reply}");
    session.quit().await;

    // Mixed and borrowed credentials.
    let mut session = Session::open(c.app.stack.smtp_addr, Ipv4Addr::LOCALHOST).await;
    session.expect("EHLO mix.praxis.test", "250").await;
    let a_user = &c.a_device.device.username;
    for (authzid, username, password, what) in [
        (
            "",
            a_user.as_str(),
            c.b_device.password.as_str(),
            "A's username, B's password",
        ),
        (
            "",
            b_user.as_str(),
            c.a_device.password.as_str(),
            "B's username, A's password",
        ),
        (
            b_user.as_str(),
            a_user.as_str(),
            c.a_device.password.as_str(),
            "A acting for B",
        ),
        (
            b_user.as_str(),
            b_user.as_str(),
            c.a_device.password.as_str(),
            "B for B with A's password",
        ),
        (
            "",
            c.b_fenced.device.username.as_str(),
            c.b_fenced.password.as_str(),
            "B's fenced device from outside its network",
        ),
    ] {
        let reply = session.login(authzid, username, password).await;
        assert!(reply.starts_with("535 5.7.8"), "{what}: {reply}");
    }
    session.quit().await;
    // Through lettre as well: B's fenced credentials get 535, nothing is sent.
    let envelope = Envelope::new(
        Some(b_sender.parse().unwrap()),
        vec!["empfang@klinik.example".parse().unwrap()],
    )
    .unwrap();
    let refused = c
        .app
        .lettre(&c.b_fenced.device.username, &c.b_fenced.password)
        .send_raw(&envelope, b"Subject: x\r\n\r\nx")
        .await
        .expect_err("outside B's allow-list");
    assert_eq!(
        refused.status().map(|s| s.to_string()).as_deref(),
        Some("535")
    );

    // A's staff allowed B's domain for a device: the edge takes the From as it is,
    // and Microsoft refuses to let A's mailbox send as B's. Nothing is delivered.
    let mut session = c.logged_in(&c.a_lists_b).await;
    let send_as = session.queue(&b_sender, "SendAs").await;
    session.quit().await;

    // The relay port: A's device known by its address uses B's sender.
    let relay = c.app.stack.relay_addr.expect("relay listener");
    let mut session = Session::open(relay, A_RELAY).await;
    session.expect("HELO ekg.alpha.test", "250").await;
    let relay_rewritten = session.queue(&b_sender, "Relay als Beta").await;
    // Identified as A, it cannot log in as B, in a transaction or out of one.
    session
        .expect(&format!("MAIL FROM:<{a_sender}>"), "250 2.1.0")
        .await;
    let auth_as_b = session.login("", b_user, &c.b_device.password).await;
    assert!(auth_as_b.starts_with("503 5.5.1"), "{auth_as_b}");
    session.expect("RSET", "250").await;
    let auth_as_b = session.login("", b_user, &c.b_device.password).await;
    assert!(auth_as_b.starts_with("503 5.5.1"), "{auth_as_b}");
    through_a.push(session.queue(&a_sender, "nach AUTH").await);
    session.quit().await;

    let mut session = Session::open(relay, A_RELAY_ENFORCED).await;
    session.expect("HELO labor.alpha.test", "250").await;
    session
        .expect(&format!("MAIL FROM:<{b_sender}>"), "550 5.7.1")
        .await;
    session.quit().await;

    // An address allow-listed for a device of A and one of B identifies neither.
    let mut session = Session::open(relay, SHARED).await;
    session.expect("HELO fax.test", "250").await;
    session
        .expect(&format!("MAIL FROM:<{b_sender}>"), "250 2.1.0")
        .await;
    session
        .expect(
            "RCPT TO:<empfang@klinik.example>",
            "550 5.7.1 Relaying denied",
        )
        .await;
    session.quit().await;

    // B's own device, for contrast: its mail does go through B.
    let mut session = c.logged_in(&c.b_device).await;
    let b_own = session.queue(&b_sender, "echt Beta").await;
    session.quit().await;

    // What was accepted went through A, with A's mailbox in From.
    for id in [rewritten, relay_rewritten] {
        let delivered = c.delivered_through_a(id).await;
        assert_eq!(
            delivered.from.as_deref(),
            Some(a_sender.as_str()),
            "{delivered:?}"
        );
        assert!(
            delivered
                .mime
                .contains(&format!("Reply-To: {b_sender}\r\n")),
            "{}",
            delivered.mime
        );
    }
    for id in &through_a {
        let delivered = c.delivered_through_a(*id).await;
        assert_eq!(delivered.from.as_deref(), Some(a_sender.as_str()));
    }
    let failed = c
        .app
        .wait_for_message(send_as, |m| m.state.as_str() == "failed")
        .await;
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("SendAs"),
        "{failed:?}"
    );
    let b_delivery = c.delivered(b_own).await;
    assert_eq!(b_delivery.tenant_id, Customers::entra(&c.b));
    assert_eq!(b_delivery.mailbox, b_sender);

    // Nothing but B's own message is queued for or delivered through B.
    let queued_for_b: Vec<MessageId> =
        sqlx::query_scalar("SELECT id FROM messages WHERE tenant_id = $1")
            .bind(c.b.tenant.id)
            .fetch_all(c.app.pool())
            .await
            .unwrap();
    assert_eq!(queued_for_b, vec![b_own]);
    let through_b: Vec<DeliveredMessage> = c
        .app
        .stack
        .simulator
        .directory
        .delivered()
        .into_iter()
        .filter(|m| m.tenant_id == Customers::entra(&c.b) || m.mailbox == b_sender)
        .collect();
    assert_eq!(through_b.len(), 1, "{through_b:?}");
    assert!(
        through_b[0]
            .mime
            .contains(&format!(" id {}", b_own.simple()))
    );
    let a_devices: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages m JOIN devices d ON d.id = m.device_id
          WHERE d.tenant_id = $1 AND m.tenant_id <> d.tenant_id",
    )
    .bind(c.a.tenant.id)
    .fetch_one(c.app.pool())
    .await
    .unwrap();
    assert_eq!(
        a_devices, 0,
        "a message of A's devices queued for another tenant"
    );
}

#[tokio::test]
async fn lettre_with_a_foreign_sender_goes_through_its_own_tenant() {
    let c = Customers::set_up().await;
    let b_sender = c.b_sender().to_owned();
    let message = sample_message(&b_sender, "arzt@klinik.example", "lettre als Beta");
    let envelope = Envelope::new(
        Some(b_sender.parse().unwrap()),
        vec!["arzt@klinik.example".parse().unwrap()],
    )
    .unwrap();
    let response = c
        .app
        .lettre(&c.a_device.device.username, &c.a_device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("accepted under the rewrite policy");
    let id = Uuid::parse_str(
        response
            .first_line()
            .and_then(|l| l.rsplit_once("queued as "))
            .map(|(_, id)| id.trim())
            .expect("a queue id"),
    )
    .unwrap();
    let delivered = c.delivered_through_a(id.into()).await;
    assert_eq!(delivered.from.as_deref(), Some(c.a_sender()));
    assert!(
        !delivered
            .mime
            .contains(&format!("From: Scanner <{b_sender}>")),
        "{}",
        delivered.mime
    );
    let refused = c
        .app
        .lettre(&c.a_enforced.device.username, &c.a_enforced.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect_err("the enforcing device refuses B's sender");
    assert_eq!(
        refused.status().map(|s| s.to_string()).as_deref(),
        Some("550")
    );
    let into_b = c
        .app
        .stack
        .simulator
        .directory
        .delivered()
        .into_iter()
        .filter(|m| m.tenant_id == Customers::entra(&c.b))
        .count();
    assert_eq!(into_b, 0);
}

/// The migration that put the customer on every customer row (20261207000100–103)
/// fills the rows written before it — attempts, bodies, bounces, familiar sources,
/// a known device's transcripts — from their message or device, leaves a transcript
/// of no known device without a customer, and ends with the column NOT NULL.
#[tokio::test]
async fn the_migration_names_the_customer_on_rows_written_before_it() {
    use mailbridge_core::db::MIGRATOR;
    let pool = crate::harness::database_migrated_to(20261206000100).await;
    let (tenant, device, message): (Uuid, Uuid, Uuid) = sqlx::query_as(
        "WITH t AS (INSERT INTO tenants (name, entra_tenant_id, sender_mailbox)
                    VALUES ('Praxis Vorher', gen_random_uuid(), 'scan@vorher.example') RETURNING id),
              d AS (INSERT INTO devices (tenant_id, name, username, password_hash)
                    SELECT id, 'Scanner', 'scanner@vorher', 'x' FROM t RETURNING id, tenant_id),
              m AS (INSERT INTO messages (id, tenant_id, mail_from, rcpt_to, size_bytes, client_addr)
                    SELECT gen_random_uuid(), tenant_id, 'scan@vorher.example', ARRAY['arzt@klinik.example'], 10, '192.0.2.7'
                      FROM d RETURNING id)
         SELECT (SELECT id FROM t), (SELECT id FROM d), (SELECT id FROM m)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO message_bodies (message_id, body, sealed) VALUES ('{message}', 'x', false);
         INSERT INTO delivery_attempts (message_id, started_at, duration_ms, method, outcome, worker)
             VALUES ('{message}', now(), 5, 'graph', 'retry', 'w');
         INSERT INTO message_bounces (message_id, recipient, status, diagnosis, reported_at, report_id)
             VALUES ('{message}', 'arzt@klinik.example', '5.1.1', 'unknown_recipient', now(), 'r1');
         INSERT INTO device_sources (device_id, source) VALUES ('{device}', '192.0.2.0/24');
         INSERT INTO session_transcripts (device_id, source_addr, started_at, ended_at, listener, outcome, lines)
             VALUES ('{device}', '192.0.2.7', now(), now(), 'submission', 'ok', '[]'),
                    (NULL, '198.51.100.9', now(), now(), 'submission', 'refused', '[]');"
    )))
    .execute(&pool)
    .await
    .unwrap();
    MIGRATOR.run(&pool).await.expect("migrates");
    let named: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT t, count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id IS NULL)
           FROM (SELECT 'attempts' t, tenant_id FROM delivery_attempts
                 UNION ALL SELECT 'bodies', tenant_id FROM message_bodies
                 UNION ALL SELECT 'bounces', tenant_id FROM message_bounces
                 UNION ALL SELECT 'sources', tenant_id FROM device_sources
                 UNION ALL SELECT 'transcripts', tenant_id FROM session_transcripts) rows
          GROUP BY t ORDER BY t",
    )
    .bind(tenant)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [
        ("attempts", 1, 0),
        ("bodies", 1, 0),
        ("bounces", 1, 0),
        ("sources", 1, 0),
        ("transcripts", 1, 1),
    ]
    .map(|(t, named, without)| (t.to_owned(), named, without));
    assert_eq!(named, expected);
    let nullable: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE column_name = 'tenant_id' AND is_nullable = 'YES'
            AND table_name IN ('delivery_attempts', 'message_bodies', 'message_bounces',
                               'device_sources', 'session_transcripts')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        nullable,
        ["session_transcripts"],
        "NOT NULL where a customer always is"
    );
    let refused = sqlx::query(
        "INSERT INTO session_transcripts (device_id, tenant_id, source_addr, started_at, ended_at, listener, outcome, lines)
         VALUES (NULL, $1, '198.51.100.9', now(), now(), 'submission', 'refused', '[]')",
    )
    .bind(tenant)
    .execute(&pool)
    .await;
    assert!(refused.is_err(), "no customer on a transcript of no device");
}
