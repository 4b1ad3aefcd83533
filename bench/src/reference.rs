//! The reference everyone knows, run privately on high loopback ports: Postfix
//! (from the Debian package) relaying to `smtp-sink`, with its own configuration and
//! queue directory, and `smtp-source` as the load generator — the same load against
//! Postfix and mailbridge, and against `smtp-sink` alone as the loopback ceiling.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something listens on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `smtp-sink`, accepting and discarding everything.
pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
}

impl Sink {
    pub fn start() -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new("smtp-sink");
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(["-c", &addr.to_string(), "1024"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("smtp-sink (Debian package postfix)")?;
        wait_listening(addr, "smtp-sink")?;
        Ok(Self { child, addr })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A private Postfix: its own configuration and queue under a temporary directory,
/// smtpd on a high loopback port, relaying everything to `relay_to`.
pub struct Postfix {
    pub addr: SocketAddr,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postfix {
    pub fn start(relay_to: SocketAddr) -> anyhow::Result<Self> {
        if !is_root() {
            bail!("a private Postfix instance needs root (postfix start)");
        }
        let dir = tempfile::Builder::new()
            .prefix("mailbridge-bench-postfix-")
            .tempdir()?;
        let config = dir.path().join("etc");
        let queue = dir.path().join("queue");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&config)?;
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&queue)?;
        // Postfix's daemons run as `postfix`: they must reach the directory, and own
        // the data directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let chown = Command::new("chown")
            .args(["postfix"])
            .arg(&data)
            .status()?;
        if !chown.success() {
            bail!("chown postfix {}", data.display());
        }
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        std::fs::write(
            config.join("main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench-postfix.mailbridge.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [{relay}]:{relay_port}
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
message_size_limit = 52428800
default_process_limit = 200
maillog_file_prefixes = {dir}
maillog_file = {log}
syslog_name = postfix-bench
",
                queue = queue.display(),
                data = data.display(),
                relay = relay_to.ip(),
                relay_port = relay_to.port(),
                log = dir.path().join("maillog").display(),
                dir = dir.path().display(),
            ),
        )?;
        // Debian's master.cf without chroot, smtpd on our port, logging to a file.
        let master = std::fs::read_to_string("/etc/postfix/master.cf")
            .context("/etc/postfix/master.cf (Debian package postfix)")?;
        let mut lines = Vec::new();
        for line in master.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with(char::is_whitespace) || line.starts_with('#') || fields.len() < 8 {
                lines.push(line.to_owned());
                continue;
            }
            let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            fields[4] = "n".into();
            if fields[0] == "smtp" && fields[1] == "inet" {
                fields[0] = addr.to_string();
            }
            lines.push(fields.join(" "));
        }
        if !lines.iter().any(|l| l.starts_with("postlog ")) {
            lines.push("postlog unix-dgram n - n - 1 postlogd".into());
        }
        std::fs::write(config.join("master.cf"), lines.join("\n") + "\n")?;
        let status = Command::new("postfix")
            .args(["-c", &config.display().to_string(), "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !status.status.success() {
            bail!("postfix start: {}", String::from_utf8_lossy(&status.stderr));
        }
        wait_listening(addr, "Postfix")?;
        Ok(Self {
            addr,
            config,
            _dir: dir,
        })
    }

    /// Holds deliveries (`defer_transports`) or lets them go again: the accept path
    /// alone, as mailbridge's with its worker paused.
    pub fn hold_deliveries(&self, hold: bool) -> anyhow::Result<()> {
        let config = self.config.display().to_string();
        let setting = if hold {
            "defer_transports = smtp relay"
        } else {
            "defer_transports ="
        };
        for args in [
            vec!["postconf", "-c", &config, "-e", setting],
            vec!["postfix", "-c", &config, "reload"],
        ] {
            let status = Command::new(args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("{}", args.join(" "));
            }
        }
        if !hold {
            let _ = Command::new("postqueue")
                .args(["-c", &config, "-f"])
                .status();
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        Ok(())
    }

    /// Flushes Postfix's queue and waits until it is empty, so that what Postfix
    /// still delivers does not run beside the next measurement: measured without
    /// it, mailbridge's accept rate with deliveries held was about half of what it
    /// is alone on the machine.
    pub fn drain(&self, within: std::time::Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + within;
        let _ = Command::new("postqueue")
            .args(["-c", &self.config.display().to_string(), "-f"])
            .status();
        loop {
            let queued = self.queued();
            if queued == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("Postfix still has {queued} messages queued after {within:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// Messages still in Postfix's queue.
    pub fn queued(&self) -> usize {
        Command::new("postqueue")
            .args(["-c", &self.config.display().to_string(), "-j"])
            .output()
            .map(|o| {
                o.stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args(["-c", &self.config.display().to_string(), "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `smtp-source -s sessions -m messages -l size` against `addr`; messages per second.
pub fn smtp_source(
    addr: SocketAddr,
    sessions: usize,
    messages: usize,
    size: usize,
    from: &str,
    to: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("smtp-source")
        .args([
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
            "-l",
            &size.to_string(),
            "-f",
            from,
            "-t",
            to,
            "-M",
            "bench.mailbridge.test",
            &addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("smtp-source (Debian package postfix)")?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "smtp-source against {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(messages as f64 / elapsed.as_secs_f64())
}

/// Resident memory of a process: now and its peak, in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}
