//! A throwaway PostgreSQL server for `mailbridge dev` and the test suite: started from
//! the machine's own server binaries in a temporary directory on a free loopback port,
//! with a random password, and gone when its owner is.
//!
//! PostgreSQL refuses to run as root, so a root process runs it as the `postgres`
//! user (or `nobody`). The server is bound to the lifetime of this process through
//! the parent-death signal, so a killed test run leaves no server behind; directories
//! of dead owners are swept at the next start. Never used in production.
#![allow(unsafe_code)] // pre_exec (parent-death signal) and kill(2); see the two functions below.

use std::{
    fs,
    io::{self, Write},
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use secrecy::SecretString;

const DIR_PREFIX: &str = "mailbridge-pg-";
const SUPERUSER: &str = "mailbridge";

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and postgres on PATH and under /usr/lib/postgresql/*/bin); install the PostgreSQL server package or set DATABASE_URL"
    )]
    BinariesNotFound,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Tuning for a scratch server.
#[derive(Debug, Clone)]
pub struct ScratchOptions {
    /// Off for tests (fast, nothing to keep); on when durability is measured.
    pub fsync: bool,
    pub max_connections: u32,
    /// Load `pg_stat_statements` (for profiling: what each statement costs).
    pub statement_statistics: bool,
}

impl Default for ScratchOptions {
    fn default() -> Self {
        Self {
            fsync: false,
            max_connections: 200,
            statement_statistics: false,
        }
    }
}

/// A running throwaway server. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct ScratchPostgres {
    pid: u32,
    port: u16,
    password: String,
    dir: tempfile::TempDir,
    waiter: Option<thread::JoinHandle<()>>,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    options: ScratchOptions,
}

impl ScratchPostgres {
    /// The postmaster's process id (its children are the server's other processes).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn start(options: &ScratchOptions) -> Result<Self, ScratchError> {
        let bin = find_binaries().ok_or(ScratchError::BinariesNotFound)?;
        sweep_stale_dirs();
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        fs::write(dir.path().join("owner.pid"), std::process::id().to_string())?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;

        let password = mailbridge_core::crypto::generate_password();
        let pwfile = dir.path().join("pwfile");
        fs::File::create(&pwfile)?.write_all(password.as_bytes())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--username={SUPERUSER}"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data)
            .current_dir(dir.path());
        as_user(&mut initdb, run_as);
        let out = initdb.output()?;
        fs::remove_file(&pwfile)?;
        if !out.status.success() {
            return Err(ScratchError::Step {
                step: "initdb",
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }

        let mut server = Self {
            pid: 0,
            port: 0,
            password,
            dir,
            waiter: None,
            bin,
            run_as,
            options: options.clone(),
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(ScratchError::Step { detail, .. }) => last_error = detail,
                Err(e) => return Err(e),
            }
        }
        Err(ScratchError::Step {
            step: "starting postgres",
            detail: last_error,
        })
    }

    /// Starts the postmaster on the server's data directory and port.
    fn launch(&mut self) -> Result<(), ScratchError> {
        let dir = self.dir.path().to_owned();
        let log_path = dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))?;
        }
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("max_connections={}", self.options.max_connections),
            ])
            .args([
                "-c",
                &format!("fsync={}", if self.options.fsync { "on" } else { "off" }),
            ])
            .args(["-c", "shared_buffers=128MB"]);
        if self.options.statement_statistics {
            postgres
                .args(["-c", "shared_preload_libraries=pg_stat_statements"])
                .args(["-c", "pg_stat_statements.track_planning=on"]);
        }
        postgres
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        as_user(&mut postgres, self.run_as);
        die_with_parent(&mut postgres);
        let (pid, waiter, exited) = spawn_watched(postgres)?;
        match wait_ready(&dir, &exited) {
            Ok(()) => {
                self.pid = pid;
                self.waiter = Some(waiter);
                Ok(())
            }
            Err(detail) => {
                send_signal(pid, libc::SIGQUIT);
                let _ = waiter.join();
                Err(ScratchError::Step {
                    step: "starting postgres",
                    detail,
                })
            }
        }
    }

    /// Stops the server (its files stay), as a crash or an outage would: every
    /// connection breaks. `resume` starts it again on the same port.
    pub fn pause(&mut self) {
        self.stop();
    }

    /// Starts a paused server again, with everything it had committed.
    pub fn resume(&mut self) -> Result<(), ScratchError> {
        let _ = fs::remove_file(self.dir.path().join("data/postmaster.pid"));
        self.launch()
    }

    /// Superuser URL of the server, for `database` (created by the caller if new).
    pub fn url(&self, database: &str) -> SecretString {
        SecretString::from(format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stop(&mut self) {
        // SIGQUIT is PostgreSQL's immediate shutdown: right for a throwaway cluster.
        if let Some(waiter) = self.waiter.take() {
            send_signal(self.pid, libc::SIGQUIT);
            let _ = waiter.join();
        }
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the postmaster reports itself ready (line 8 of `postmaster.pid`).
fn wait_ready(dir: &Path, exited: &std::sync::mpsc::Receiver<()>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if exited.try_recv().is_ok() {
            let log = fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("postgres exited: {log}"));
        }
        let pidfile = fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
        if pidfile.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err("postgres did not become ready within 60 s".to_owned())
}

fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` user if the machine has one, else `nobody`.
fn unprivileged_user() -> Result<(u32, u32), ScratchError> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    lookup("postgres")
        .or_else(|| lookup("nobody"))
        .ok_or(ScratchError::Step {
            step: "finding an unprivileged user",
            detail: "neither `postgres` nor `nobody` exists; PostgreSQL cannot run as root".into(),
        })
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// Asks the kernel to send SIGQUIT to the server when this process dies, however it
/// dies. Runs in the child after the uid switch (which would otherwise clear it).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The parent-death signal fires when the *thread* that spawned the child ends, so
/// the child is spawned from a thread that lives exactly as long as the child does.
fn spawn_watched(
    mut cmd: Command,
) -> Result<(u32, thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>), ScratchError> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (exited_tx, exited_rx) = std::sync::mpsc::channel();
    let waiter = thread::Builder::new()
        .name("scratch-postgres".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exited_tx.send(());
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        })?;
    let pid = started_rx.recv().map_err(|_| ScratchError::Step {
        step: "spawning postgres",
        detail: "waiter died".into(),
    })??;
    Ok((pid, waiter, exited_rx))
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned and still wait for; no memory involved.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Removes directories left by scratch servers whose owning process is gone.
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let owner = fs::read_to_string(entry.path().join("owner.pid")).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
