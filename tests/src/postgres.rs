//! A real PostgreSQL 15 (Debian's `postgresql-15`) for the tests, started in a temp dir on a
//! loopback address: `initdb` with trust authentication, then `postgres` in the foreground.
//! PostgreSQL refuses to run as root: as root, both run as the `postgres` user (`setpriv`,
//! which execs, so the process killed is the server itself).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::{KillOnDrop, TestDir, unique_loopback};

/// Where Debian puts PostgreSQL 15's programs.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running PostgreSQL with an empty database `geolb` owned by user `geolb`.
pub struct Postgres {
    dir: TestDir,
    /// Where it listens.
    pub addr: SocketAddr,
    process: Option<KillOnDrop>,
}

impl Postgres {
    /// Whether PostgreSQL 15 is installed here.
    pub fn available() -> bool {
        std::path::Path::new(BIN).join("postgres").is_file()
    }

    /// Initializes a cluster and starts it.
    pub async fn start() -> Result<Postgres> {
        ensure!(Postgres::available(), "PostgreSQL 15 is not installed ({BIN}); run scripts/setup.sh");
        let dir = TestDir::new("postgres")?;
        let data = dir.join("data");
        std::fs::create_dir(&data)?;
        as_postgres_owner(dir.path())?;
        let status = command("initdb")?
            .args(["-D"])
            .arg(&data)
            .args(["-U", "geolb", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(std::process::Stdio::null())
            .status()
            .context("initdb")?;
        ensure!(status.success(), "initdb failed: {status}");
        let ip: Ipv4Addr = unique_loopback();
        let port = free_port(ip)?;
        let mut pg = Postgres { dir, addr: SocketAddr::from((ip, port)), process: None };
        pg.resume().await?;
        let status = command("createdb")?
            .args(["-h", &ip.to_string(), "-p", &port.to_string(), "-U", "geolb", "geolb"])
            .status()
            .context("createdb")?;
        ensure!(status.success(), "createdb failed: {status}");
        Ok(pg)
    }

    /// The connection string members use.
    pub fn conninfo(&self) -> String {
        format!("host={} port={} user=geolb dbname=geolb connect_timeout=2", self.addr.ip(), self.addr.port())
    }

    /// Starts the server (again) on the same data and address; returns once it accepts connections.
    pub async fn resume(&mut self) -> Result<()> {
        let process = KillOnDrop::spawn(
            "postgres",
            command("postgres")?
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-p", &self.addr.port().to_string()])
                .args(["-c", &format!("listen_addresses={}", self.addr.ip())])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", self.dir.path().display()))
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
            self.dir.path(),
        )?;
        process.wait_for_log_line("ready to accept connections", Duration::from_secs(20)).await?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (a fast shutdown: clients are disconnected at once).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(process) = self.process.take() else { bail!("postgres is not running") };
        let status = Command::new("kill").args(["-INT", &process.id().to_string()]).status()?;
        ensure!(status.success(), "kill -INT failed");
        process.wait_exit(Duration::from_secs(20)).await?;
        Ok(())
    }

    /// Runs one SQL statement with `psql`; its output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new("psql")
            .args([
                "-h",
                &self.addr.ip().to_string(),
                "-p",
                &self.addr.port().to_string(),
                "-U",
                "geolb",
                "-d",
                "geolb",
            ])
            .args(["-At", "-c", sql])
            .output()
            .context("psql")?;
        ensure!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The directory the server runs in.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// A PostgreSQL program, run as the `postgres` user when this process is root.
fn command(program: &str) -> Result<Command> {
    let path = std::path::Path::new(BIN).join(program);
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(path);
        Ok(c)
    } else {
        Ok(Command::new(path))
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Makes `dir` the `postgres` user's when this process is root.
fn as_postgres_owner(dir: &std::path::Path) -> Result<()> {
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status()?;
        ensure!(status.success(), "chown failed");
    }
    Ok(())
}

/// A TCP port free on `ip` now.
fn free_port(ip: Ipv4Addr) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}
