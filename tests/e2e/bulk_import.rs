//! Devices in bulk: a CSV import with its dry run (every error of every line,
//! nothing created while one is wrong), the confirmed import in one transaction,
//! the credentials downloadable once (and working on the edge), bulk disable and
//! bulk new passwords; and the lists that scale: 2 000 customers with 5 devices
//! each, searched, sorted and paged, their pages' times measured and printed.

use mailbridge_core::ids::TenantId;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::{
    harness::{SmtpProbe, TestApp},
    staff_client::StaffClient,
};

const GOOD: &str = "name;kind;site;listener;allow-list;sender\n\
MFP Empfang;printer;Empfang;587;;scan@praxisbulk.example\n\
Scanner Labor;scanner;Labor, 1. OG;465;127.0.0.0/24;\n\
Fax;other;Keller;relay;192.0.2.44;@praxisbulk.example\n";

const BAD: &str = "name,kind,site,listener,allow-list,sender\n\
MFP Empfang,printer,Empfang,587,,\n\
,scanner,Labor,587,,\n\
Toaster,toaster,Küche,587,,\n\
Fax,other,Keller,relay,,\n\
Weit,other,,587,0.0.0.0/0,\n\
MFP Empfang,printer,Empfang,587,,not-an-address\n";

async fn device_count(app: &TestApp, customer: TenantId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM devices WHERE tenant_id = $1")
        .bind(customer)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn devices_are_imported_from_csv_after_a_dry_run_and_their_credentials_downloaded_once() {
    let app = TestApp::spawn_with_clear_auth(|_| {}).await;
    let tenant = app.add_tenant("Praxis Bulk").await;
    let customer = tenant.tenant.id;
    let mut tim = StaffClient::sign_in_as(&app, "tim.technik@msp.example", "technician").await;
    let mut rita = StaffClient::sign_in_as(&app, "rita.lesen@msp.example", "readonly").await;
    let import = format!("/customers/{customer}/devices/import");

    assert_eq!(rita.get(&import).await.status, StatusCode::FORBIDDEN);
    let upload = tim.get(&import).await;
    assert_eq!(upload.status, StatusCode::OK);

    // A file with bad lines: every error shown by line, nothing created, no confirm.
    let dry = tim
        .post_file(&import, "file", "devices.csv", BAD.as_bytes())
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert!(dry.body.contains("id=\"dry-run-bad\""));
    assert!(!dry.body.contains("id=\"confirm-import\""));
    let line = |n: u64| -> String {
        let at = dry.body.find(&format!("data-line=\"{n}\"")).unwrap();
        let end = at + dry.body[at..].find("</tr>").unwrap();
        dry.body[at..end].to_owned()
    };
    assert!(line(2).contains("data-ok=\"true\""));
    assert!(line(3).contains("The name must be 1 to 200 characters."));
    assert!(line(4).contains("Unknown device kind toaster"));
    assert!(line(5).contains("needs its allowed IP addresses"));
    assert!(line(6).contains("too wide"), "{}", line(6));
    assert!(line(7).contains("in the file twice") && line(7).contains("not-an-address"));
    // Confirming the bad file anyway (a forged form) creates nothing.
    let forced = tim
        .post(&format!("{import}/confirm"), &[("csv", BAD)])
        .await;
    assert_eq!(forced.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(device_count(&app, customer).await, 0);

    // The good file: the dry run shows what would be created and creates nothing.
    let dry = tim
        .post_file(&import, "file", "devices.csv", GOOD.as_bytes())
        .await;
    assert!(dry.body.contains("id=\"dry-run-ok\""), "{}", dry.body);
    assert!(dry.body.contains("<td>Labor, 1. OG</td>"));
    assert_eq!(device_count(&app, customer).await, 0);
    assert_eq!(
        rita.post(&format!("{import}/confirm"), &[("csv", GOOD)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let created = tim
        .post(&format!("{import}/confirm"), &[("csv", GOOD)])
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(device_count(&app, customer).await, 3);
    let action = created
        .body
        .split("id=\"download-credentials\"")
        .next()
        .and_then(|b| b.rsplit("action=\"").next())
        .map(|a| a.split('"').next().unwrap().to_owned())
        .unwrap();
    assert!(
        action.starts_with(&format!("/customers/{customer}/credentials/")),
        "{action}"
    );

    // Another member of staff cannot take the download; its owner can, once.
    let mut anna = StaffClient::sign_in_as(&app, "anna.admin@msp.example", "admin").await;
    assert_eq!(anna.post(&action, &[]).await.status, StatusCode::CONFLICT);
    let download = tim.post(&action, &[]).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.headers["cache-control"], "no-store");
    let csv = download.body;
    assert!(csv.starts_with("name,username,password,listener"), "{csv}");
    let again = tim.post(&action, &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "only once");
    let row = csv.lines().find(|l| l.starts_with("MFP Empfang,")).unwrap();
    let fields: Vec<&str> = row.split(',').collect();
    let (username, password) = (fields[1], fields[2]);
    assert!(password.len() >= 20);
    assert!(!created.body.contains(password), "no password on the page");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("Fax,") && l.ends_with(",,relay")),
        "{csv}"
    );
    // The imported credentials work on the edge.
    let edge = app.stack.smtp_addr;
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", username, password)
            .await
            .starts_with("235")
    );
    let stored: (String, Option<String>, String, Vec<String>) = sqlx::query_as(
        "SELECT kind, site, listener, allowed_senders FROM devices WHERE username = $1",
    )
    .bind(username)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "printer".into(),
            Some("Empfang".into()),
            "submission".into(),
            vec!["scan@praxisbulk.example".to_owned()]
        )
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action IN ('device.import', 'device.credentials_downloaded') AND tenant_id = $1",
    )
    .bind(customer)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(audited, 2);
    // Importing the same names again is refused line by line.
    let dry = tim
        .post_file(&import, "file", "devices.csv", GOOD.as_bytes())
        .await;
    assert!(dry.body.contains("already has a device named MFP Empfang"));

    // Bulk: select two devices → confirm → new passwords, downloaded once.
    let ids: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, username FROM devices WHERE tenant_id = $1 AND listener <> 'relay' ORDER BY name",
    )
    .bind(customer)
    .fetch_all(app.pool())
    .await
    .unwrap();
    let selection: Vec<(&str, String)> = std::iter::once(("action", "rotate".to_owned()))
        .chain(ids.iter().map(|(id, _)| ("device", id.to_string())))
        .collect();
    let form: Vec<(&str, &str)> = selection.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let confirm = tim
        .post(&format!("/customers/{customer}/devices/bulk"), &form)
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("id=\"confirm-bulk\""));
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", username, password)
            .await
            .starts_with("235"),
        "nothing changed before the confirmation"
    );
    let rotated = tim
        .post(
            &format!("/customers/{customer}/devices/bulk/confirm"),
            &form,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let action = rotated
        .body
        .split("id=\"download-credentials\"")
        .next()
        .and_then(|b| b.rsplit("action=\"").next())
        .map(|a| a.split('"').next().unwrap().to_owned())
        .unwrap();
    let csv = tim.post(&action, &[]).await.body;
    let row = csv.lines().find(|l| l.starts_with("MFP Empfang,")).unwrap();
    let new_password = row.split(',').nth(2).unwrap();
    assert_ne!(new_password, password);
    // The old password is gone, once the edge heard of the change.
    SmtpProbe::login_refused_within(
        edge,
        "127.0.0.1",
        username,
        password,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", username, new_password)
            .await
            .starts_with("235")
    );

    // Bulk disable; a device of another customer in the selection is not found.
    let other = app.add_tenant("Praxis Fremd").await;
    let foreign = app.add_device(&other, "Fremd").await;
    let with_foreign = [
        ("action", "disable"),
        ("device", &ids[0].0.to_string()),
        ("device", &foreign.device.id.to_string()),
    ];
    let refused = tim
        .post(
            &format!("/customers/{customer}/devices/bulk/confirm"),
            &with_foreign,
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(
        rita.post(
            &format!("/customers/{customer}/devices/bulk/confirm"),
            &[("action", "disable"), ("device", &ids[0].0.to_string())]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let disabled = tim
        .post(
            &format!("/customers/{customer}/devices/bulk/confirm"),
            &[
                ("action", "disable"),
                ("device", &ids[0].0.to_string()),
                ("device", &ids[1].0.to_string()),
            ],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert!(!disabled.body.contains("download-credentials"));
    let enabled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM devices WHERE tenant_id = $1 AND enabled")
            .bind(customer)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(enabled, 1, "only the relay device is still enabled");
    let foreign_enabled: bool = sqlx::query_scalar("SELECT enabled FROM devices WHERE id = $1")
        .bind(foreign.device.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(foreign_enabled);
    app.stack.shutdown().await;
}

/// Times a page (server-side work plus a loopback round trip); returns the page.
async fn timed(
    staff: &mut StaffClient,
    path: &str,
    times: &mut Vec<(String, Duration)>,
) -> crate::staff_client::Page {
    // Once to warm the connection and PostgreSQL's caches, then measured.
    staff.get(path).await;
    let started = Instant::now();
    let page = staff.get(path).await;
    times.push((path.to_owned(), started.elapsed()));
    assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    page
}

#[tokio::test]
async fn lists_of_2000_customers_with_5_devices_each_are_searched_sorted_and_paged() {
    let app = TestApp::spawn_without_worker().await;
    // 2 000 customers × 5 devices, with messages and failed logins, in a few statements.
    sqlx::query(
        "INSERT INTO tenants (name, entra_tenant_id, sender_mailbox)
         SELECT format('Praxis %s', lpad(n::text, 4, '0')), gen_random_uuid(), format('scan@praxis%s.example', n)
           FROM generate_series(1, 2000) n",
    )
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (tenant_id, name, username, password_hash, site, last_seen_at, allowed_senders)
         SELECT t.id, format('Gerät %s', d), format('dev-%s-%s', replace(t.id::text, '-', ''), d), 'x',
                format('Raum %s', d), CASE WHEN d = 1 THEN NULL ELSE now() - make_interval(mins => d) END,
                ARRAY[format('geraet%s@%s', d, split_part(t.sender_mailbox, '@', 2))]
           FROM tenants t, generate_series(1, 5) d",
    )
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, device_id, mail_from, rcpt_to, size_bytes, state, client_addr, received_at, finished_at)
         SELECT gen_random_uuid(), d.tenant_id, d.id, 'scan@praxis.example', ARRAY['a@b.example'], 100,
                CASE WHEN n % 3 = 0 THEN 'failed' ELSE 'queued' END, '127.0.0.1',
                now() - make_interval(mins => n), CASE WHEN n % 3 = 0 THEN now() END
           FROM devices d, generate_series(1, 2) n",
    )
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(app.pool()).await.unwrap();
    let busiest: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'Praxis 1234'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, device_id, mail_from, rcpt_to, size_bytes, state, client_addr)
         SELECT gen_random_uuid(), $1, NULL, 'x@praxis.example', ARRAY['a@b.example'], 100, 'queued', '127.0.0.1'
           FROM generate_series(1, 50)",
    )
    .bind(busiest)
    .execute(app.pool())
    .await
    .unwrap();

    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let mut times = Vec::new();
    let first = timed(&mut owner, "/", &mut times).await;
    assert_eq!(
        first.body.matches("data-customer=").count(),
        50,
        "a page of 50"
    );
    assert!(first.body.contains("data-total=\"2000\""));
    assert!(first.body.contains("Praxis 0001") && !first.body.contains("Praxis 0051"));
    let next = timed(&mut owner, "/?sort=name&offset=1950", &mut times).await;
    assert!(next.body.contains("Praxis 2000") && next.body.contains("Praxis 1951"));
    assert!(
        next.body.contains("id=\"customers-previous\"")
            && !next.body.contains("id=\"customers-next\"")
    );
    let queued = timed(&mut owner, "/?sort=queued", &mut times).await;
    let first_row = queued.body.split("data-customer=\"").nth(1).unwrap();
    assert!(
        first_row.starts_with(&busiest.to_string()),
        "the busiest first"
    );
    timed(&mut owner, "/?sort=failures", &mut times).await;
    timed(&mut owner, "/?sort=last_seen", &mut times).await;
    let search = timed(&mut owner, "/?q=scan%40praxis1234.example", &mut times).await;
    assert_eq!(search.body.matches("data-customer=").count(), 1);
    let none = owner.get("/?q=100%25").await;
    assert!(
        none.body.contains("id=\"no-customers\""),
        "% is taken literally"
    );
    let too_far = owner.get("/?offset=20000").await;
    assert_eq!(too_far.status, StatusCode::UNPROCESSABLE_ENTITY);
    let customer = timed(&mut owner, &format!("/customers/{busiest}"), &mut times).await;
    assert_eq!(customer.body.matches("data-last-seen").count(), 5);
    let by_failures = timed(
        &mut owner,
        &format!("/customers/{busiest}?sort=failures"),
        &mut times,
    )
    .await;
    assert!(by_failures.body.contains("Gerät 3"));
    let found = timed(
        &mut owner,
        &format!("/customers/{busiest}?q=geraet4%40"),
        &mut times,
    )
    .await;
    assert_eq!(
        found.body.matches("data-last-seen").count(),
        1,
        "found by its sender"
    );
    let by_seen = owner
        .get(&format!("/customers/{busiest}?sort=last_seen"))
        .await;
    let first_device = by_seen.body.split("data-last-seen>").nth(1).unwrap();
    assert!(first_device.starts_with("never seen"), "never seen first");

    // The device list's aggregates use the customer's indexes, not a scan of all.
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT device_id, count(*) FROM messages
          WHERE tenant_id = $1 AND device_id IS NOT NULL
            AND (received_at > now() - interval '24 hours' OR state = 'queued'
                 OR finished_at > now() - interval '24 hours')
          GROUP BY device_id",
    )
    .bind(busiest)
    .fetch_all(app.pool())
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan on messages"), "{plan}");

    println!("page times with 2 000 customers × 5 devices (server and a loopback round trip):");
    for (path, took) in &times {
        println!("  {:>7.1} ms  {path}", took.as_secs_f64() * 1000.0);
    }
    app.stack.shutdown().await;
}
