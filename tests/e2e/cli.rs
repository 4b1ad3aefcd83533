//! The administration commands, run as the real binary against a real database.

use crate::harness::{database_url, empty_database, mailbridge_binary};
use secrecy::ExposeSecret;

fn run(database: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(mailbridge_binary())
        .args(args)
        .env("DATABASE_URL", database_url(database).expose_secret())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running mailbridge")
}

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[tokio::test]
async fn migrate_then_add_a_tenant_and_a_device_from_the_command_line() {
    let database = empty_database().await;
    let migrate = run(&database, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let tenant = json(&run(
        &database,
        &[
            "tenant",
            "add",
            "--name",
            "Praxis Dr. Kühn",
            "--entra-tenant-id",
            "5f1c7a52-0d7e-4c5e-9a51-2b7b1d0e8f11",
            "--sender-mailbox",
            "scanner@praxis-kuehn.example",
        ],
    ));
    assert_eq!(tenant["name"], "Praxis Dr. Kühn");
    assert_eq!(tenant["delivery_method"], "graph");
    assert_eq!(
        tenant["entra_tenant_id"],
        "5f1c7a52-0d7e-4c5e-9a51-2b7b1d0e8f11"
    );

    let device = json(&run(
        &database,
        &[
            "device",
            "add",
            "--tenant",
            "Praxis Dr. Kühn",
            "--name",
            "MFP Flur",
        ],
    ));
    let username = device["username"].as_str().unwrap();
    let password = device["password"].as_str().unwrap();
    assert!(password.len() >= 20, "{password}");
    assert_eq!(device["tenant_id"], tenant["id"]);

    let pool = sqlx::PgPool::connect(database_url(&database).expose_secret())
        .await
        .unwrap();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM devices WHERE username = $1")
        .bind(username)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(password));
    let listed = json(&run(
        &database,
        &["device", "list", "--tenant", "Praxis Dr. Kühn"],
    ));
    assert!(
        listed[0].get("password").is_none(),
        "a listing never shows the password"
    );

    let set = json(&run(
        &database,
        &[
            "device",
            "set",
            "--tenant",
            "Praxis Dr. Kühn",
            "--device",
            "MFP Flur",
            "--allow-network",
            "192.0.2.0/24",
            "--allow-network",
            "198.51.100.7",
            "--allow-sender",
            "@praxis-kuehn.example",
            "--sender-policy",
            "enforce",
            "--rate-limit",
            "30",
        ],
    ));
    assert_eq!(
        set["allowed_networks"],
        serde_json::json!(["192.0.2.0/24", "198.51.100.7/32"])
    );
    assert_eq!(
        set["allowed_senders"],
        serde_json::json!(["@praxis-kuehn.example"])
    );
    assert_eq!(set["sender_policy"], "enforce");
    assert_eq!(set["rate_limit_per_minute"], 30);
    let bad = run(
        &database,
        &[
            "device",
            "set",
            "--tenant",
            "Praxis Dr. Kühn",
            "--device",
            "MFP Flur",
            "--allow-network",
            "192.0.2.0/33",
        ],
    );
    assert!(!bad.status.success());
    let rotated = json(&run(
        &database,
        &[
            "device",
            "rotate",
            "--tenant",
            "Praxis Dr. Kühn",
            "--device",
            "MFP Flur",
        ],
    ));
    assert_eq!(rotated["username"], username);
    assert_ne!(rotated["password"], password);
    let new_hash: String =
        sqlx::query_scalar("SELECT password_hash FROM devices WHERE username = $1")
            .bind(username)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(new_hash, hash);

    let customer = json(&run(
        &database,
        &[
            "tenant",
            "set",
            "--tenant",
            "Praxis Dr. Kühn",
            "--notification-address",
            "it@msp.example",
            "--rate-limit",
            "120",
        ],
    ));
    assert_eq!(customer["notification_address"], "it@msp.example");
    let limit: Option<i32> = sqlx::query_scalar("SELECT rate_limit_per_minute FROM tenants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(limit, Some(120));

    let duplicate = run(
        &database,
        &[
            "tenant",
            "add",
            "--name",
            "Praxis Dr. Kühn",
            "--entra-tenant-id",
            "5f1c7a52-0d7e-4c5e-9a51-2b7b1d0e8f11",
            "--sender-mailbox",
            "scanner@praxis-kuehn.example",
        ],
    );
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));
    let unknown = run(
        &database,
        &["device", "add", "--tenant", "Nobody", "--name", "x"],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no customer"));
    let bad_mailbox = run(
        &database,
        &[
            "tenant",
            "add",
            "--name",
            "Praxis B",
            "--entra-tenant-id",
            "5f1c7a52-0d7e-4c5e-9a51-2b7b1d0e8f12",
            "--sender-mailbox",
            "not-an-address",
        ],
    );
    assert!(!bad_mailbox.status.success());
}

/// Pods migrating at once (an init container each) take turns on sqlx's advisory
/// lock; a release reverted to the previous one finds the schema ahead and starts;
/// a schema that is not an extension of the binary's is still refused.
#[tokio::test]
async fn migrate_in_parallel_and_after_a_newer_release() {
    let database = empty_database().await;
    let runs: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(mailbridge_binary())
                .args(["migrate", "--wait", "30"])
                .env("DATABASE_URL", database_url(&database).expose_secret())
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("running mailbridge")
        })
        .collect();
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A newer release added a migration; this binary is older.
    let pool = mailbridge_core::db::pool(
        &database_url(&database),
        mailbridge_core::db::PoolOptions::default(),
    )
    .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000001, 'from a newer release', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let ahead = run(&database, &["migrate"]);
    assert!(
        ahead.status.success(),
        "{}",
        String::from_utf8_lossy(&ahead.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ahead.stdout).contains("ahead of this release"),
        "{}",
        String::from_utf8_lossy(&ahead.stdout)
    );

    // One of the binary's own migrations missing: not a revert, refused.
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT min(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let refused = run(&database, &["migrate"]);
    assert!(
        !refused.status.success(),
        "a gap in the applied migrations was accepted"
    );
}

/// With --wait, migrate waits for a database that does not answer yet, then fails
/// with the connection error once the time is up.
#[tokio::test]
async fn migrate_waits_for_the_database_then_gives_up() {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(mailbridge_binary())
        .args(["migrate", "--wait", "3"])
        .env("DATABASE_URL", "postgres://nobody:x@127.0.0.1:9/nothing")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running mailbridge");
    assert!(!out.status.success());
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to the database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
