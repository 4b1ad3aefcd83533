//! `mailbridge dev`, the first command of the README: it must start everything from
//! nothing, print a test command that works as printed, and clean up on Ctrl-C.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[test]
fn dev_starts_everything_and_its_printed_curl_command_delivers_a_message() {
    let mut child = Command::new(crate::harness::mailbridge_binary())
        .arg("dev")
        .env_remove("DATABASE_URL")
        .env("MAILBRIDGE_SUBMISSION_LISTEN", "127.0.0.1:0")
        .env("MAILBRIDGE_WEB_LISTEN", "127.0.0.1:0")
        .env("MAILBRIDGE_SIM_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting mailbridge dev");
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
    let curl = printed
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

    let field = |label: &str| {
        printed
            .lines()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_owned()))
            .unwrap()
    };
    let sim = field("simulated at")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let sim_ca = field("simulated at")
        .rsplit("CA certificate:")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inbox = Command::new("curl")
            .args(["-sS", "--cacert", &sim_ca, &format!("{sim}/_sim/messages")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&inbox.stdout);
        if body.contains("Hello from mailbridge") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {body} {}",
            String::from_utf8_lossy(&inbox.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let web = field("Control plane");
    let page = Command::new("curl").args(["-sS", &web]).output().unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("Praxis Dr. Sonnenschein"));

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}
