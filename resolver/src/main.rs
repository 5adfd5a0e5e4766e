//! `geolb-resolver`: the remote backend PowerDNS asks for geo-balanced names.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use geolb_member::process::{CommonArgs, EXIT_BAD_CONFIG};

/// Answers PowerDNS remote-backend lookups with the nearest healthy CDN node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Listen address of the HTTP connector, overriding `[resolver] listen` (port 0 picks one;
    /// the chosen address is logged as `listening on http://ADDR/dns`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Path of the unix-socket connector, overriding `[resolver] socket`.
    #[arg(long, value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.common.init();

    if cli.common.check_config {
        return match geolb_member::fleet::check(&cli.common.config) {
            Ok(config) => check_config(&config),
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }
    let (source, config) = match geolb_member::fleet::ConfigSource::open(&cli.common.config) {
        Ok(opened) => opened,
        Err(geolb_member::fleet::OpenError::Config(e)) => {
            eprintln!("Error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let mut config = config;
    if let (Some(member), Some(addr)) = (config.member.as_mut(), cli.common.gossip_listen) {
        member.gossip_listen = addr;
    }
    match serve(cli, source, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(config: &geolb_config::Config) -> ExitCode {
    let mut errors = Vec::new();
    let mut warnings = config.warnings.clone();
    match geolb_resolver::state::open_geoip(config) {
        Ok(Some(g)) => {
            for db in g.describe() {
                println!("geoip: {db}");
            }
        }
        Ok(None) => {}
        Err(e) => errors.push(e.to_string()),
    }
    match geolb_resolver::state::load_zones(config) {
        Ok(loaded) => {
            let (zones, waiting) = (loaded.set, loaded.waiting);
            for (origin, count) in zones.zones() {
                println!("zone {origin}: {count} records");
            }
            for origin in &waiting {
                println!("zone {origin}: no usable copy from its primary yet (transferred at start)");
            }
            for s in config.services.iter().filter(|s| !waiting.iter().any(|o| geolb_config::in_zone(&s.name, o))) {
                // DNSSEC: pdns signs our answers with the zone's keys; a name that exists only
                // in the remote backend gets a denial proof from the zone and validates as bogus.
                if !config.zones.is_empty() && zones.records(&s.name).is_empty() {
                    warnings.push(format!(
                        "service `{}` has no record in the zone files; add a placeholder (e.g. an A record) so DNSSEC-signed zones do not deny it",
                        s.name
                    ));
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    errors.extend(geolb_resolver::transfer::check(&config.zones));
    for w in &warnings {
        println!("warning: {w}");
    }
    if errors.is_empty() {
        println!(
            "config ok: {} pops, {} nodes, {} services",
            config.pops.len(),
            config.nodes.len(),
            config.services.len()
        );
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            eprintln!("Error: {e}");
        }
        ExitCode::from(EXIT_BAD_CONFIG)
    }
}

fn serve(
    cli: Cli,
    source: std::sync::Arc<geolb_member::fleet::ConfigSource>,
    config: geolb_config::Config,
) -> anyhow::Result<()> {
    let runtime =
        geolb_member::process::runtime(config.resolver.threads).context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let addr = cli.listen.unwrap_or(config.resolver.listen);
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("failed to bind {addr}"))?;
        let admin = match config.member.as_ref().map(|m| cli.common.admin_listen.unwrap_or(m.admin_listen)) {
            Some(addr) => {
                Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("failed to bind {addr}"))?)
            }
            None => None,
        };
        let unix = match cli.socket.as_ref().or(config.resolver.socket.as_ref()) {
            Some(path) => Some(geolb_resolver::server::unix::bind(path, config.resolver.socket_mode)?),
            None => None,
        };
        let notify = match config.resolver.notify_listen {
            Some(addr) => {
                Some(tokio::net::UdpSocket::bind(addr).await.with_context(|| format!("failed to bind udp {addr}"))?)
            }
            None => None,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(geolb_member::process::cancel_on_signal(shutdown.clone()));
        let listeners = geolb_resolver::Listeners { http, unix, admin, notify };
        geolb_resolver::run(source, config, listeners, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
