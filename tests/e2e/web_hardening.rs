//! The control plane behind an ingress: the sign-in flow cookie with the `__Host-`
//! prefix over HTTPS, sign-in starts limited per client address, and the client's
//! address taken from `X-Forwarded-For` only when a trusted proxy sends it. Runs the
//! real `mailbridge web` binary where its environment matters.

use std::{net::SocketAddr, time::Duration};

use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::{
    harness::{TestApp, database_url, mailbridge_binary},
    staff_client::StaffClient,
};

/// A `mailbridge web` process against the test's database, signing in through the
/// test's simulator, with `public_url` (`{addr}` is replaced by its address) and
/// extra environment; killed when dropped.
pub struct WebProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for WebProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebProcess {
    pub async fn start(app: &TestApp, public_url: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let public_url = public_url.replace("{addr}", &addr.to_string());
        let settings = &app.stack.settings;
        let oidc = settings.web.oidc.as_ref().expect("the simulator's sign-in");
        let directory = &app.stack.simulator.directory;
        directory.set_redirect_uris(
            &app.stack.sign_in_client_id,
            &[
                &format!("{}/sign-in/callback", settings.web.public_url),
                &format!("{public_url}/sign-in/callback"),
            ],
        );
        directory.set_redirect_uris(
            &app.stack.client_id,
            &[
                &format!("{}/consent/callback", settings.web.public_url),
                &format!("{public_url}/consent/callback"),
            ],
        );
        let mut command = std::process::Command::new(mailbridge_binary());
        command
            .arg("web")
            .env("DATABASE_URL", database_url(&app.database).expose_secret())
            .env("MAILBRIDGE_WEB_LISTEN", addr.to_string())
            .env("MAILBRIDGE_PUBLIC_URL", &public_url)
            .env("MAILBRIDGE_OIDC_ISSUER", &oidc.issuer)
            .env("MAILBRIDGE_OIDC_CLIENT_ID", &oidc.client_id)
            .env(
                "MAILBRIDGE_OIDC_CLIENT_SECRET",
                oidc.client_secret.expose_secret(),
            )
            .env(
                "MAILBRIDGE_OIDC_ALLOWED_TENANTS",
                oidc.allowed_tenants.join(","),
            )
            .env(
                "MAILBRIDGE_EXTRA_CA_FILE",
                settings.extra_ca_file.as_ref().expect("the simulator's CA"),
            )
            .env("RUST_LOG", "warn")
            // The web never holds the MSP app's credential.
            .env_remove("MAILBRIDGE_ENTRA_CLIENT_SECRET")
            .env_remove("MAILBRIDGE_ENTRA_CLIENT_CERTIFICATE_FILE")
            .env_remove("MAILBRIDGE_ENTRA_CLIENT_KEY_FILE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("starting mailbridge web");
        let process = Self { child, addr };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = reqwest::get(format!("http://{addr}/healthz")).await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break process;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mailbridge web did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A browser without a session, talking to this process.
    pub fn client(&self, app: &TestApp) -> StaffClient {
        let mut client = StaffClient::anonymous(app);
        client.base = format!("http://{}", self.addr);
        client
    }
}

#[tokio::test]
async fn the_flow_cookie_has_the_host_prefix_over_https() {
    let app = TestApp::spawn_without_worker().await;
    mailbridge_web::add_staff(
        app.pool(),
        "hanna.host@msp.example",
        mailbridge_web::Role::Admin,
    )
    .await
    .unwrap();
    app.stack
        .add_staff_user("hanna.host@msp.example", "Hanna Host");
    // The ingress terminates TLS: the process serves HTTP, its public URL is https.
    let web = WebProcess::start(&app, "https://{addr}", &[]).await;
    let mut browser = web.client(&app);
    let start = browser.get("/sign-in/start?next=/").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let set: Vec<&str> = start
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let flow = set
        .iter()
        .find(|c| c.starts_with("__Host-mailbridge_flow="))
        .unwrap_or_else(|| panic!("a __Host- flow cookie: {set:?}"));
    assert!(
        flow.contains("; Secure") && flow.contains("; Path=/;"),
        "{flow}"
    );
    assert!(!flow.to_ascii_lowercase().contains("domain="), "{flow}");
    assert!(
        !set.iter().any(|c| c.starts_with("mailbridge_flow=")),
        "no unprefixed flow cookie: {set:?}"
    );

    // The sign-in finishes with it, and the callback clears it by the same name.
    let authorize = start.location.expect("to the provider");
    let callback = browser
        .answer_at_simulator(&authorize, "sim_user=hanna.host@msp.example")
        .await
        .replacen("https://", "http://", 1);
    let done = browser.get_absolute(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(browser.has_cookie("__Host-mailbridge_session"));
    assert!(!browser.has_cookie("__Host-mailbridge_flow"), "cleared");

    // A flow cookie without the prefix (planted by a sibling host) binds nothing.
    let mut planted = web.client(&app);
    let start = planted.get("/sign-in/start?next=/").await;
    let authorize = start.location.expect("to the provider");
    let callback = planted
        .answer_at_simulator(&authorize, "sim_user=hanna.host@msp.example")
        .await
        .replacen("https://", "http://", 1);
    let state = callback
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let response = reqwest::Client::new()
        .get(&callback)
        .header(reqwest::header::COOKIE, format!("mailbridge_flow={state}"))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(body.contains("started in another browser"), "{body}");
    app.stack.shutdown().await;
}

/// `GET /sign-in/start` from `from` (a loopback address), in `lang`.
async fn start_sign_in_from(app: &TestApp, from: &str, lang: &str) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!(
            "http://{}/sign-in/start?next=/",
            app.stack.web_addr
        ))
        .header(reqwest::header::ACCEPT_LANGUAGE, lang)
        .send()
        .await
        .expect("GET /sign-in/start");
    (response.status(), response.text().await.unwrap())
}

async fn flows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM oauth_flows")
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_starts_are_limited_per_client_address() {
    let app = TestApp::spawn_without_worker().await;
    // 20 at once, then one every 3 s: on a slow machine the burst itself takes long
    // enough for a start or two to be refilled, which counts as allowed.
    let started = std::time::Instant::now();
    let mut accepted = 0i64;
    let refused = |lang: &'static str| {
        let app = &app;
        async move {
            let mut accepted_here = 0i64;
            loop {
                let (status, body) = start_sign_in_from(app, "127.0.0.5", lang).await;
                match status {
                    StatusCode::SEE_OTHER => accepted_here += 1,
                    StatusCode::TOO_MANY_REQUESTS => return (accepted_here, body),
                    other => panic!("start answered {other}: {body}"),
                }
                assert!(accepted_here <= 40, "never limited");
            }
        }
    };
    let (burst, body) = refused("en").await;
    accepted += burst;
    let refilled = (started.elapsed().as_secs_f64() / 3.0).ceil() as i64;
    assert!(
        (20..=20 + refilled).contains(&burst),
        "{burst} starts allowed in {:?}",
        started.elapsed()
    );
    assert!(body.contains("Too many sign-in attempts"), "{body}");
    let (more, body) = refused("de").await;
    accepted += more;
    assert!(
        body.contains("Zu viele Anmeldeversuche"),
        "translated: {body}"
    );
    assert_eq!(flows(&app).await, accepted, "no flow stored when refused");

    // Another address is not affected, and staff still sign in from it.
    let (status, _) = start_sign_in_from(&app, "127.0.0.6", "en").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.stack.shutdown().await;
}

/// Creates a customer through the API from `from`, with `X-Forwarded-For: xff`;
/// returns the address its audit record names.
async fn audited_addr(
    web: &WebProcess,
    app: &TestApp,
    token: &str,
    from: &str,
    xff: &str,
) -> String {
    let name = format!("Praxis {}", uuid::Uuid::new_v4());
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!("http://{}/api/v1/customers", web.addr))
        .bearer_auth(token)
        .header("x-forwarded-for", xff)
        .json(&serde_json::json!({ "name": name, "sender_mailbox": "scan@proxy.example" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
    sqlx::query_scalar(
        "SELECT host(client_addr) FROM audit_log WHERE action = 'customer.create' AND target = $1",
    )
    .bind(&name)
    .fetch_one(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let app = TestApp::spawn_without_worker().await;
    let email = "paul.proxy@msp.example";
    mailbridge_web::add_staff(app.pool(), email, mailbridge_web::Role::Admin)
        .await
        .unwrap();
    app.stack.add_staff_user(email, "Paul Proxy");
    // The ingress is 127.0.0.1; 127.0.0.2 stands for a client reaching the pod directly.
    let web = WebProcess::start(
        &app,
        "http://{addr}",
        &[("MAILBRIDGE_WEB_TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8")],
    )
    .await;

    // The session records the client the trusted proxy names: the right-most address
    // that is not a proxy (the client forged the left one).
    let mut browser = web.client(&app);
    let callback = browser.authorize(email).await;
    let path = callback
        .strip_prefix(&browser.base)
        .expect("our callback")
        .to_owned();
    let done = browser
        .get_with(
            &path,
            &[("x-forwarded-for", "203.0.113.66, 198.51.100.7, 10.1.2.3")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let session_addr: String = sqlx::query_scalar("SELECT host(client_addr) FROM web_sessions")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(session_addr, "198.51.100.7");

    let (_, token) = mailbridge_web::create_api_token(
        app.pool(),
        email,
        "proxy test",
        mailbridge_web::Role::Admin,
        30,
    )
    .await
    .unwrap();
    // Through the trusted proxy: the forwarded address is recorded.
    assert_eq!(
        audited_addr(&web, &app, &token, "127.0.0.1", "198.51.100.8").await,
        "198.51.100.8"
    );
    // Straight from an untrusted peer: its forged header is ignored.
    assert_eq!(
        audited_addr(&web, &app, &token, "127.0.0.2", "198.51.100.9").await,
        "127.0.0.2"
    );
    drop(web);

    // Without MAILBRIDGE_WEB_TRUSTED_PROXIES (the in-process stack) nobody is trusted.
    let mut staff = StaffClient::sign_in_as(&app, "olga.ohne@msp.example", "admin").await;
    let created = staff
        .post_with_headers(
            "/customers",
            &[
                ("name", "Praxis Ohne Proxy"),
                ("sender_mailbox", "scan@ohne-proxy.example"),
            ],
            &[("x-forwarded-for", "198.51.100.10")],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let addr: String = sqlx::query_scalar(
        "SELECT host(client_addr) FROM audit_log WHERE target = 'Praxis Ohne Proxy'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(addr, "127.0.0.1");
    app.stack.shutdown().await;
}
