//! A PostgreSQL server of a test's own, in a directory of its own on a free loopback port, which
//! the test may stop, crash, and start again (never the shared server on 5432). As root,
//! PostgreSQL's programs run as the `postgres` user, since PostgreSQL refuses to run as root.
//! Used by the fault-injection suite and by the tests of a database that comes late or
//! restarts.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::{Connection as _, PgConnection};

/// Where PostgreSQL's programs are unless `SOUK_PG_BIN` says otherwise (Debian's PostgreSQL 15).
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// PostgreSQL's programs, or why they cannot be used (for the test to print as it skips).
pub fn installed() -> Result<PathBuf, String> {
    let bin = PathBuf::from(std::env::var("SOUK_PG_BIN").unwrap_or_else(|_| DEFAULT_BIN.into()));
    for program in ["initdb", "postgres", "pg_ctl"] {
        let path = bin.join(program);
        if !path.exists() {
            return Err(format!(
                "{} is not installed (scripts/setup installs it)",
                path.display()
            ));
        }
    }
    Ok(bin)
}

/// One PostgreSQL cluster: its data directory made, its server started by `start` (or by the
/// caller, from `server_command`).
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    /// Holds the data (`pg/`), the socket and the server's log (`postgres.log`).
    dir: PathBuf,
    port: u16,
    as_root: bool,
    running: Option<Child>,
    /// The directory goes with this value (a temporary one).
    remove_dir: bool,
}

impl PgServer {
    /// A cluster in a new temporary directory, removed on drop; `Err` (the reason) when
    /// PostgreSQL is not installed.
    pub fn temporary() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("souk-pg-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self::init(&dir)?;
        server.remove_dir = true;
        Ok(server)
    }

    /// Runs `initdb` into `dir/pg` (trusting local connections, user `postgres`) and picks a
    /// free port; `dir` stays after this is dropped.
    pub fn init(dir: &Path) -> Result<Self, String> {
        let bin = installed()?;
        std::fs::create_dir_all(dir.join("pg")).map_err(|err| format!("{err}"))?;
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
        if as_root {
            let chown = Command::new("chown")
                .args(["-R", "postgres", &dir.to_string_lossy()])
                .status()
                .map_err(|err| format!("chown: {err}"))?;
            if !chown.success() {
                return Err("chown -R postgres failed".into());
            }
        }
        let server = Self {
            bin,
            dir: dir.to_owned(),
            port: free_port(),
            as_root,
            running: None,
            remove_dir: false,
        };
        let (program, mut args) = server.program("initdb");
        args.extend(
            [
                "-D",
                &dir.join("pg").to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ]
            .map(String::from),
        );
        let initdb = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .map_err(|err| format!("initdb: {err}"))?;
        if !initdb.success() {
            return Err("initdb failed".into());
        }
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// How to run PostgreSQL's program `name`: as the `postgres` user when this is root.
    pub fn program(&self, name: &str) -> (PathBuf, Vec<String>) {
        let path = self.bin.join(name).to_string_lossy().into_owned();
        if self.as_root {
            let mut args = [
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .map(String::from)
            .to_vec();
            args.push(path);
            (PathBuf::from("setpriv"), args)
        } else {
            (PathBuf::from(path), Vec::new())
        }
    }

    /// The server's command line, with `settings` (`name=value`) beside the port, the data and
    /// socket directories, loopback only, `fsync=off` and 400 connections.
    pub fn server_command(&self, settings: &[&str]) -> (PathBuf, Vec<String>) {
        let (program, mut args) = self.program("postgres");
        args.extend(
            [
                "-D",
                &self.dir.join("pg").to_string_lossy(),
                "-p",
                &self.port.to_string(),
                "-k",
                &self.dir.to_string_lossy(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=400",
            ]
            .map(String::from),
        );
        for setting in settings {
            args.extend(["-c".to_owned(), (*setting).to_owned()]);
        }
        (program, args)
    }

    /// Starts the server (its log appended to `postgres.log`), in a process group of its own so
    /// that its backends go with it. Returns at once: see `wait_until_accepting`.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the server as a standby that admits nobody (`hot_standby=off`): every connection
    /// is refused with `57P03` ("not accepting connections"), as while a server starts up,
    /// until `promote`.
    pub fn start_as_standby(&mut self) {
        std::fs::write(self.dir.join("pg").join("standby.signal"), "").expect("standby.signal");
        self.start_with(&["hot_standby=off"]);
    }

    fn start_with(&mut self, settings: &[&str]) {
        assert!(self.running.is_none(), "PostgreSQL is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("postgres.log");
        let (program, args) = self.server_command(settings);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("postgres.log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start postgres");
        self.running = Some(child);
    }

    /// Ends the standby's recovery: it admits connections from then on (`pg_ctl promote`, which
    /// waits for it).
    pub async fn promote(&self) {
        let (program, mut args) = self.program("pg_ctl");
        args.extend(
            [
                "promote",
                "-w",
                "-D",
                &self.dir.join("pg").to_string_lossy(),
            ]
            .map(String::from),
        );
        // A standby just started may not be in standby mode yet, and `pg_ctl promote` refuses
        // such a server: ask again until it takes.
        super::eventually(
            "pg_ctl promote to succeed",
            Duration::from_secs(60),
            || async {
                Command::new(&program)
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("pg_ctl promote")
                    .success()
                    .then_some(())
            },
        )
        .await;
    }

    /// Stops the server the way `pg_ctl stop -m immediate` does (SIGQUIT: no checkpoint, every
    /// connection cut, recovery at the next start), and waits until it has exited.
    pub async fn stop_immediately(&mut self) {
        let Some(mut child) = self.running.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-s", "QUIT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s QUIT postgres failed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("postgres").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "PostgreSQL did not stop within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the server admits a connection, failing the test after `timeout`.
    pub async fn wait_until_accepting(&self, timeout: Duration) {
        let url = self.url("postgres");
        super::eventually("PostgreSQL to accept connections", timeout, || async {
            let conn = PgConnection::connect(&url).await.ok()?;
            conn.close().await.ok()
        })
        .await;
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.running.take() {
            // `--` is needed: procps-ng 4.0.2's kill (Debian 12) reads `kill -KILL -PID` as
            // `kill(-1, SIGKILL)`, which as root is every process on the machine.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A loopback port nothing listens on now, for a server a test may restart on it. It is taken
/// below the kernel's ephemeral range: a port from that range (what binding port 0 gives) can
/// be the local end of some outgoing connection (a pooled database connection, say) by the time
/// the server comes back, and the server then cannot bind it again.
pub fn free_port() -> u16 {
    const LOWEST: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|start| *start > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = u128::from(ephemeral - LOWEST);
    for _ in 0..1_000 {
        let candidate = LOWEST + u16::try_from(uuid::Uuid::new_v4().as_u128() % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
    panic!("no free loopback port between {LOWEST} and {ephemeral}")
}
