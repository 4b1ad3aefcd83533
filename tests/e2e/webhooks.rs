//! Webhooks against a real HTTP receiver on loopback started by the test: the test
//! button's event arrives signed, and the signature verifies with the snippets the
//! MSP guide documents (Python and openssl, run as written there); a receiver that
//! answers 500 and then 200 gets the event exactly once more, with two workers
//! competing for the outbox; the delivery log shows both answers; internal
//! addresses are refused.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use mailbridge_core::{
    alerts::{self, Alert, AlertSettings},
    webhooks,
};
use serde_json::Value;

use crate::{
    alerts::{alerting_app, wait_alert},
    harness::database_url,
    staff_client::StaffClient,
};

/// One request the receiver got.
#[derive(Clone)]
pub struct Received {
    pub signature: String,
    pub event: String,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("event", &self.event)
            .field("signature", &self.signature)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<Received>>>,
    /// The statuses to answer with, in turn; 200 when empty.
    script: Arc<Mutex<VecDeque<u16>>>,
}

/// A webhook receiver on loopback.
pub struct Receiver {
    pub addr: SocketAddr,
    inbox: Inbox,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        let inbox = Inbox {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ..Inbox::default()
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inbox }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.got.lock().unwrap().clone()
    }

    /// Waits until `check` holds for what arrived.
    pub async fn wait(&self, what: &str, check: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let got = self.received();
            if check(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never got {what}: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inbox.got.lock().unwrap().push(Received {
        signature: header("x-mailbridge-signature"),
        event: header("x-mailbridge-event"),
        body: body.to_vec(),
    });
    let status = inbox.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// The code block of `language` after `marker` in the MSP guide.
fn documented(marker: &str, language: &str) -> String {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/msp-guide.md"
    ))
    .expect("the MSP guide");
    let after = &guide[guide
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in the guide"))..];
    let start = after
        .find(&format!("```{language}\n"))
        .expect("the code block")
        + language.len()
        + 4;
    let end = after[start..].find("```").expect("the block's end");
    after[start..start + end].to_owned()
}

/// Runs the documented verification snippets on what arrived; true when both say
/// valid. The Python one runs only where python3 is installed (it is in CI).
fn verify_as_documented(secret: &str, received: &Received) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.json"), &received.body).unwrap();
    let shell = std::process::Command::new("sh")
        .arg("-c")
        .arg(documented("<!-- webhook-verify-shell -->", "sh"))
        .current_dir(dir.path())
        .env("SIG", &received.signature)
        .env("MAILBRIDGE_WEBHOOK_SECRET", secret)
        .output()
        .expect("sh");
    let shell_ok = shell.status.success();
    assert_eq!(
        String::from_utf8_lossy(&shell.stdout).trim(),
        if shell_ok { "valid" } else { "INVALID" }
    );
    let python_ok = if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok()
    {
        std::fs::write(
            dir.path().join("verify.py"),
            documented("<!-- webhook-verify-python -->", "python"),
        )
        .unwrap();
        let out = std::process::Command::new("python3")
            .arg("verify.py")
            .arg(&received.signature)
            .arg("body.json")
            .current_dir(dir.path())
            .env("MAILBRIDGE_WEBHOOK_SECRET", secret)
            .output()
            .expect("python3");
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stdout).contains("INVALID"),
            "the snippet ran: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    } else {
        eprintln!("python3 is not installed: the Python snippet is not run");
        shell_ok
    };
    assert_eq!(shell_ok, python_ok, "both snippets agree");
    shell_ok
}

/// Creates a webhook in the control plane as an admin; returns its id and secret.
async fn create(admin: &mut StaffClient, name: &str, url: &str) -> (uuid::Uuid, String) {
    let page = admin
        .post("/webhooks", &[("name", name), ("url", url)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let secret = page
        .text_of("webhook-secret")
        .expect("the secret, shown once");
    let id = page
        .body
        .split("/webhooks/")
        .nth(1)
        .and_then(|rest| rest.get(..36))
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .expect("a link to the webhook");
    (id, secret)
}

#[tokio::test]
async fn the_test_event_arrives_signed_and_verifies_with_the_documented_snippets() {
    let app = alerting_app(|_| {}).await;
    let receiver = Receiver::start(&[]).await;
    let mut admin = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "admin").await;

    // Internal addresses and plain HTTP elsewhere are refused when saved.
    for refused in [
        "http://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://example.com/hook",
        "http://[::1]:9/hook",
    ] {
        let page = admin
            .post("/webhooks", &[("name", "Nein"), ("url", refused)])
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{refused}: {}",
            page.status
        );
    }
    assert!(webhooks::list(app.pool()).await.unwrap().is_empty());

    let (id, secret) = create(&mut admin, "PSA", &receiver.url()).await;
    assert!(secret.starts_with("whsec_"));
    let page = admin.get("/alerts").await;
    assert!(
        !page.body.contains(&secret),
        "the secret is shown only once"
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_sealed FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is sealed at rest"
    );

    let tested = admin.post(&format!("/webhooks/{id}/test"), &[]).await;
    assert_eq!(tested.status, StatusCode::SEE_OTHER);
    let got = receiver.wait("the test event", |r| !r.is_empty()).await;
    let event = &got[0];
    assert_eq!(event.event, "test");
    let json = event.json();
    assert_eq!(json["type"], "test");
    assert!(
        json["title"]["de"]
            .as_str()
            .unwrap()
            .contains("Testereignis")
    );
    assert!(event.signature.starts_with("t="), "{}", event.signature);
    // Verified as documented; a changed body or another secret is not.
    assert!(verify_as_documented(&secret, event));
    let mut tampered = event.clone();
    tampered.body = String::from_utf8(event.body.clone())
        .unwrap()
        .replacen("\"test\"", "\"alert.opened\"", 1)
        .into_bytes();
    assert_ne!(tampered.body, event.body);
    assert!(!verify_as_documented(&secret, &tampered));
    assert!(!verify_as_documented("whsec_other", event));

    // The delivery log shows the answer.
    let log = admin.get(&format!("/webhooks/{id}")).await;
    assert!(log.body.contains("class=\"badge ok\">200<"), "{}", log.body);
}

#[tokio::test]
async fn a_receiver_answering_500_then_200_gets_the_event_exactly_once_more() {
    let app = alerting_app(|_| {}).await;
    // A second worker process competes for the outbox (and the evaluation).
    let mut second = app
        .worker_command(&database_url(&app.database), 300)
        .env("MAILBRIDGE_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("MAILBRIDGE_ALERT_INTERVAL_SECONDS", "1")
        .env("MAILBRIDGE_PUBLIC_URL", &app.stack.settings.web.public_url)
        .spawn()
        .expect("a second worker");
    let receiver = Receiver::start(&[500]).await;
    let key = app.master_key().clone();
    let policy = webhooks::UrlPolicy {
        allowed: "127.0.0.0/8".parse().unwrap(),
    };
    let (hook, secret) = webhooks::create(app.pool(), &key, &policy, "Teams", &receiver.url())
        .await
        .unwrap();

    // An alert opens: the MSP app's secret expires in a week.
    alerts::save_settings(
        app.pool(),
        &AlertSettings {
            app_secret_expires_on: Some(chrono::Utc::now().date_naive() + chrono::Days::new(7)),
            ..AlertSettings::default()
        },
    )
    .await
    .unwrap();
    let alert = wait_alert(&app, "app_credential", "secret", Alert::is_open).await;
    let got = receiver.wait("the event twice", |r| r.len() >= 2).await;
    assert_eq!(
        got[0].json()["id"],
        got[1].json()["id"],
        "the same event again"
    );
    assert_eq!(got[0].json()["type"], "alert.opened");
    assert_eq!(got[0].json()["alert"]["id"], alert.id.to_string());
    assert!(verify_as_documented(&secret, &got[1]));

    // Resolving it sends the next event; by then the first has had its two tries.
    alerts::save_settings(app.pool(), &AlertSettings::default())
        .await
        .unwrap();
    let got = receiver
        .wait("the resolved event", |r| {
            r.iter().any(|e| e.event == "alert.resolved")
        })
        .await;
    let opened = got.iter().filter(|e| e.event == "alert.opened").count();
    assert_eq!(opened, 2, "once failed, once more, never again: {got:?}");
    let resolved = &got
        .iter()
        .find(|e| e.event == "alert.resolved")
        .unwrap()
        .json();
    assert_eq!(resolved["alert"]["state"], "resolved");
    assert!(
        resolved["links"]["alert"]
            .as_str()
            .unwrap()
            .starts_with(&app.stack.settings.web.public_url)
    );

    let log = webhooks::deliveries(app.pool(), hook.id, 10).await.unwrap();
    let statuses: Vec<Option<i32>> = log.iter().rev().map(|d| d.status).collect();
    assert_eq!(statuses[..2], [Some(500), Some(200)], "{log:?}");
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM webhook_outbox WHERE webhook_id = $1")
            .bind(hook.id)
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert!(states.iter().all(|s| s == "delivered"), "{states:?}");
    second.kill().ok();
    second.wait().ok();
}
