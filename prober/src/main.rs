//! `geolb-prober`: checks every CDN node from this PoP and gossips the verdicts.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use geolb_member::process::{CommonArgs, EXIT_BAD_CONFIG};

/// Health-checks CDN nodes from this PoP and gossips the verdicts to the cluster (the config
/// needs [prober] and [cluster]).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.common.init();
    if cli.common.check_config {
        return match geolb_member::fleet::check(&cli.common.config) {
            Ok(c) if c.prober.is_some() && c.cluster.is_some() => {
                // The prober places no client: the resolver's GeoIP warning is not its concern.
                for w in c.warnings.iter().filter(|w| *w != geolb_config::NO_GEOIP) {
                    println!("warning: {w}");
                }
                println!("config ok: {} nodes to check", c.nodes.len());
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!("Error: {}: a prober needs [prober] and [cluster] tables", cli.common.config.display());
                ExitCode::from(EXIT_BAD_CONFIG)
            }
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }
    let (source, mut config) = match geolb_member::fleet::ConfigSource::open(&cli.common.config) {
        Ok((s, c)) if c.prober.is_some() && c.cluster.is_some() => (s, c),
        Ok(_) => {
            eprintln!("Error: {}: a prober needs [prober] and [cluster] tables", cli.common.config.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(geolb_member::fleet::OpenError::Config(e)) => {
            eprintln!("Error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in config.warnings.iter().filter(|w| *w != geolb_config::NO_GEOIP) {
        tracing::warn!("{w}");
    }
    if let Some(prober) = config.prober.as_mut() {
        if let Some(addr) = cli.common.gossip_listen {
            prober.gossip_listen = addr;
        }
        if let Some(addr) = cli.common.admin_listen {
            prober.admin_listen = addr;
        }
    }
    match serve(source, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            // An address in use: restarting does not help (RestartPreventExitStatus=2).
            if geolb_member::process::unrecoverable(e.chain()) {
                ExitCode::from(geolb_member::process::EXIT_START)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn serve(
    source: std::sync::Arc<geolb_member::fleet::ConfigSource>,
    config: geolb_config::Config,
) -> anyhow::Result<()> {
    let threads = config.prober.as_ref().map_or(1, |p| p.threads);
    let runtime = geolb_member::process::runtime(threads).context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let addr = config.prober.as_ref().map(|p| p.admin_listen).context("no [prober]")?;
        let admin = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("failed to bind {addr}"))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(geolb_member::process::cancel_on_signal(shutdown.clone()));
        geolb_prober::run::run(source, config, geolb_prober::run::Listeners { admin }, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
