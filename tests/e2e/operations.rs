//! The operations endpoints: every process's `/metrics` passes `promtool check
//! metrics` and shows what happened; `/healthz` and `/readyz` answer.

use lettre::{AsyncTransport, address::Envelope};
use tokio::io::AsyncWriteExt;

use crate::harness::{TestApp, sample_message, without_final_crlf};

async fn get(url: &str) -> (bool, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", url])
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

async fn promtool_accepts(exposition: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn every_process_exposes_valid_metrics_and_health() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Metrik").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "metrik@klinik.example", "metrics");
    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["metrik@klinik.example".parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .unwrap();
    let _ = app
        .lettre(&device.device.username, "wrong")
        .send_raw(&envelope, b"x")
        .await;
    app.wait_for_inbox("metrik@klinik.example", 1).await;

    let ops = format!("http://{}", app.stack.ops_addr);
    let web = format!("http://{}", app.stack.web_addr);
    for base in [&ops, &web] {
        assert_eq!(
            get(&format!("{base}/healthz")).await,
            (true, "ok\n".to_owned())
        );
        assert_eq!(
            get(&format!("{base}/readyz")).await,
            (true, "ready\n".to_owned())
        );
    }
    let tenant_id = tenant.tenant.id.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let scrape = loop {
        let (ok, scrape) = get(&format!("{ops}/metrics")).await;
        assert!(ok);
        let delivered = format!(
            "mailbridge_deliveries_total{{method=\"graph\",outcome=\"accepted\",tenant=\"{tenant_id}\"}} 1"
        );
        let named =
            format!("mailbridge_tenant_info{{name=\"Praxis Metrik\",tenant=\"{tenant_id}\"}} 1");
        if scrape.contains(&delivered) && scrape.contains(&named) {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never showed the delivery:\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for family in [
        "mailbridge_edge_auth_total{listener=\"submission\",result=\"success\"}",
        "mailbridge_edge_auth_total{listener=\"submission\",result=\"bad_password\"}",
        "mailbridge_edge_messages_total{code=\"2.0.0\",listener=\"submission\",result=\"accepted\"}",
        "mailbridge_edge_connections_total{listener=\"submission\",tls=\"TLSv1.3\"}",
        "mailbridge_edge_message_size_bytes_bucket",
        "mailbridge_delivery_latency_seconds_bucket{method=\"graph\"",
        &format!(
            "mailbridge_token_requests_total{{aadsts=\"\",outcome=\"success\",tenant=\"{tenant_id}\"}} 1"
        ),
        // Queue gauges only for customers with mail waiting: none by now.
        "mailbridge_build_info{version=",
        "process_resident_memory_bytes",
    ] {
        assert!(scrape.contains(family), "{family} missing from:\n{scrape}");
    }
    promtool_accepts(&scrape).await;

    let (ok, web_scrape) = get(&format!("{web}/metrics")).await;
    assert!(ok);
    assert!(
        web_scrape.contains("mailbridge_web_requests_total{route=\"/healthz\",status=\"200\"}"),
        "{web_scrape}"
    );
    promtool_accepts(&web_scrape).await;
}

/// A free TCP port on both loopbacks (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The web as the chart runs it: dual-stack, `/metrics` on a port of its own (not on
/// the port an ingress publishes), with the queue gauges of the whole cluster read from
/// PostgreSQL — here with no worker running anywhere, so they can only come from it.
#[tokio::test]
async fn the_web_exports_the_cluster_gauges_on_its_own_metrics_port() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Warteschlange").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "queue@klinik.example", "queued");
    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["queue@klinik.example".parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .unwrap();

    let (web_port, metrics_port) = (free_port(), free_port());
    let mut web = std::process::Command::new(crate::harness::mailbridge_binary())
        .arg("web")
        .env(
            "DATABASE_URL",
            secrecy::ExposeSecret::expose_secret(&crate::harness::database_url(&app.database)),
        )
        .env("MAILBRIDGE_WEB_LISTEN", format!("[::]:{web_port}"))
        .env(
            "MAILBRIDGE_WEB_METRICS_LISTEN",
            format!("[::]:{metrics_port}"),
        )
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting mailbridge web");
    let tenant_id = tenant.tenant.id.to_string();
    let queued = format!(
        "mailbridge_queue_depth{{customer=\"Praxis Warteschlange\",tenant=\"{tenant_id}\"}} 1"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let scrape = loop {
        let (ok, scrape) = get(&format!("http://[::1]:{metrics_port}/metrics")).await;
        if ok && scrape.contains(&queued) {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the web never exported the queue:\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert!(
        scrape.contains("mailbridge_queue_oldest_due_seconds{customer=\"Praxis Warteschlange\"")
    );
    // Over IPv4 too (dual-stack); health on the web port, metrics not.
    let (ok, health) = get(&format!("http://127.0.0.1:{web_port}/healthz")).await;
    assert!(ok, "{health}");
    let (ok, _) = get(&format!("http://[::1]:{web_port}/metrics")).await;
    assert!(!ok, "/metrics is served on the web port too");
    let _ = web.kill();
    let _ = web.wait();
}
