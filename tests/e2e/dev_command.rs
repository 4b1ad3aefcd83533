//! `mailbridge dev`, the first command of the README: it must start everything from
//! nothing, print a test command that works as printed, log nothing secret, and
//! clean up on Ctrl-C.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `mailbridge dev` and what it printed on stdout.
struct Dev {
    child: Child,
    printed: String,
}

impl Dev {
    fn start(stderr: Stdio, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(crate::harness::mailbridge_binary());
        command
            .arg("dev")
            .env_remove("DATABASE_URL")
            .env("MAILBRIDGE_SUBMISSION_LISTEN", "127.0.0.1:0")
            .env("MAILBRIDGE_SUBMISSIONS_LISTEN", "127.0.0.1:0")
            .env("MAILBRIDGE_RELAY_LISTEN", "127.0.0.1:0")
            .env("MAILBRIDGE_WEB_LISTEN", "127.0.0.1:0")
            .env("MAILBRIDGE_METRICS_LISTEN", "127.0.0.1:0")
            .env("MAILBRIDGE_SIM_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("starting mailbridge dev");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut printed = String::new();
        while !printed.contains("Ctrl-C stops everything") {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "dev exited early:\n{printed}"
            );
            printed.push_str(&line);
        }
        Self { child, printed }
    }

    fn field(&self, label: &str) -> String {
        self.printed
            .lines()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_owned()))
            .unwrap_or_else(|| panic!("{label} not printed:\n{}", self.printed))
    }

    /// The simulator's CA certificate file, as printed.
    fn sim_ca(&self) -> String {
        self.field("simulated at")
            .rsplit("CA certificate:")
            .next()
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Runs the printed test command (curl) and waits until the simulator has the mail.
    fn send_the_printed_test_mail(&self) {
        let curl = self
            .printed
            .lines()
            .find(|l| l.trim_start().starts_with("printf"))
            .expect("a test command");
        let sent = Command::new("bash")
            .arg("-c")
            .arg(curl.trim())
            .output()
            .unwrap();
        assert!(
            sent.status.success(),
            "the printed command failed: {}",
            String::from_utf8_lossy(&sent.stderr)
        );
        let sim = self
            .field("simulated at")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let sim_ca = self.sim_ca();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let inbox = Command::new("curl")
                .args(["-sS", "--cacert", &sim_ca, &format!("{sim}/_sim/messages")])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&inbox.stdout);
            if body.contains("Hello from mailbridge") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not delivered: {body} {}",
                String::from_utf8_lossy(&inbox.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ctrl-C, and the exit status within 30 s.
    fn interrupt(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "dev did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn dev_starts_everything_and_its_printed_curl_command_delivers_a_message() {
    let dev = Dev::start(Stdio::null(), &[]);
    dev.send_the_printed_test_mail();
    // Sign in to the control plane as the printed demo user, with curl, through the
    // simulated Entra ID, and find the demo customer.
    let control_plane = dev.field("Control plane");
    let (web, staff) = control_plane
        .split_once("sign in as")
        .expect("who can sign in");
    let web = web.trim().trim_end_matches('/');
    let user = staff.split_whitespace().next().unwrap();
    let sim_ca = dev.sim_ca();
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().to_str().unwrap();
    let location = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{redirect_url}",
                "-b",
                jar,
                "-c",
                jar,
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let authorize = location(&[&format!("{web}/sign-in/start")]);
    assert!(authorize.contains("/oauth2/v2.0/authorize?"), "{authorize}");
    // The browser's sign-in page is plain HTTP on loopback: no certificate warning.
    assert!(authorize.starts_with("http://127.0.0.1:"), "{authorize}");
    let callback = location(&["--cacert", &sim_ca, &format!("{authorize}&sim_user={user}")]);
    assert!(callback.contains("/sign-in/callback?code="), "{callback}");
    assert_eq!(location(&[&callback]), format!("{web}/"));
    let page = Command::new("curl")
        .args(["-sS", "-b", jar, &format!("{web}/")])
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("Praxis Dr. Sonnenschein"), "{page}");
    assert!(page.contains("Owner"), "the demo owner is invited as owner");
    let status = dev.interrupt();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_logs_of_a_whole_run_hold_no_secret_and_follow_each_message() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("mailbridge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let dev = Dev::start(
        Stdio::from(log),
        &[("RUST_LOG", "debug"), ("MAILBRIDGE_LOG_FORMAT", "json")],
    );
    let password = dev.field("password");
    let username = dev.field("username");
    dev.send_the_printed_test_mail();
    // A failed login too: its password must not be logged either.
    let smtp = dev
        .field("SMTP")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let ca = dev.field("CA certificate:");
    let _ = Command::new("curl")
        .args([
            "-sS",
            "--ssl-reqd",
            "--cacert",
            &ca,
            "--url",
            &format!("smtp://{smtp}"),
        ])
        .args([
            "--user",
            &format!("{username}:WrongPassword-9f8e7d"),
            "--mail-from",
            "a@b.example",
            "--mail-rcpt",
            "c@d.example",
        ])
        .args(["--upload-file", "/dev/null"])
        .output();
    assert!(dev.interrupt().success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 20,
        "a debug run logs plenty:\n{logs}"
    );
    for secret in [
        password.as_str(),
        "WrongPassword-9f8e7d",
        "It works.",
        "eyJ",
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let queued = events
        .iter()
        .find(|e| e["message"] == "message queued")
        .expect("the edge logged the message");
    let queue_id = queued["queue_id"].as_str().unwrap();
    assert!(
        queued["span"]["session"].is_string(),
        "the SMTP session's id goes along: {queued}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "delivery attempt" && e["queue_id"] == queue_id),
        "the worker's attempt names the same queue id"
    );
}
