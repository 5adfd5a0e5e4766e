//! `geolb-prober`: checks every CDN node from this PoP and gossips the verdicts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Exit code for a config that does not load or validate.
const EXIT_BAD_CONFIG: u8 = 2;

/// Health-checks CDN nodes from this PoP and gossips the verdicts to the cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The config file (it needs [prober] and [cluster]).
    #[arg(long, short, default_value = "/etc/geolb/geolb.toml")]
    config: PathBuf,
    /// Validate the config, print every problem, and exit: 0 when valid, 2 when not.
    #[arg(long)]
    check_config: bool,
    /// Admin API address, overriding `[prober] admin_listen` (port 0 picks one; it is logged).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Gossip UDP address, overriding `[prober] gossip_listen` (port 0 picks one; it is logged).
    #[arg(long)]
    gossip_listen: Option<SocketAddr>,
    /// Log filter, e.g. `info` or `geolb_prober=debug` (RUST_LOG works too).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Ok(absolute) = std::path::absolute(&cli.config) {
        cli.config = absolute;
    }
    geolb_prober::signals::init_tracing(&cli.log_level);
    let mut config = match geolb_config::load(&cli.config) {
        Ok(c) if c.prober.is_some() && c.cluster.is_some() => c,
        Ok(_) => {
            eprintln!("Error: {}: a prober needs [prober] and [cluster] tables", cli.config.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cli.check_config {
        for w in &config.warnings {
            println!("warning: {w}");
        }
        println!("config ok: {} nodes to check", config.nodes.len());
        return ExitCode::SUCCESS;
    }
    if let Some(prober) = config.prober.as_mut() {
        if let Some(addr) = cli.gossip_listen {
            prober.gossip_listen = addr;
        }
        if let Some(addr) = cli.admin_listen {
            prober.admin_listen = addr;
        }
    }
    match serve(cli.config, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: PathBuf, config: geolb_config::Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let addr = config.prober.as_ref().map(|p| p.admin_listen).context("no [prober]")?;
        let admin = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("failed to bind {addr}"))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(geolb_prober::signals::cancel_on_signal(shutdown.clone()));
        geolb_prober::run::run(config_path, config, geolb_prober::run::Listeners { admin }, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
