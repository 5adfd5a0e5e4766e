//! `geolb-resolver`: the remote backend PowerDNS asks for geo-balanced names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use geolb_member::process::{CommonArgs, EXIT_BAD_CONFIG, EXIT_START};

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
    /// Take the sockets and live PowerDNS connections over from the resolver running with this
    /// config (on its handover socket), once this one has loaded everything; the old one then
    /// stops. Without a running resolver it starts normally. SIGUSR2 to a running resolver
    /// starts its binary again with this flag (docs/operations.md, "Upgrades").
    #[arg(long)]
    takeover: bool,
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
        Err(Failure::Start(e)) => {
            tracing::error!("cannot start: {e:#}");
            eprintln!("Error: {e:#}");
            ExitCode::from(EXIT_START)
        }
        Err(Failure::Run(e)) => {
            eprintln!("Error: {e:#}");
            // The gossip port in use: restarting does not help either.
            if geolb_member::process::unrecoverable(e.chain()) { ExitCode::from(EXIT_START) } else { ExitCode::FAILURE }
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

/// Why the resolver stopped with an error: at start (exit 2: restarting does not help, e.g. an
/// address in use; the unit's `RestartPreventExitStatus=2`) or while serving (exit 1).
enum Failure {
    Start(anyhow::Error),
    Run(anyhow::Error),
}

fn serve(
    cli: Cli,
    source: std::sync::Arc<geolb_member::fleet::ConfigSource>,
    config: geolb_config::Config,
) -> Result<(), Failure> {
    // Resolved now: after an upgrade replaced the file, /proc/self/exe names the deleted one.
    let exe = std::env::current_exe();
    let runtime = geolb_member::process::runtime(config.resolver.threads)
        .context("failed to start the async runtime")
        .map_err(Failure::Start)?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(geolb_member::process::cancel_on_signal(shutdown.clone()));
        let handover = config.resolver.handover_path(
            cli.socket.as_deref(),
            config.member.as_ref().map(|m| m.state_dir.as_path()),
        );
        let admin_addr = config.member.as_ref().map(|m| cli.common.admin_listen.unwrap_or(m.admin_listen));
        // Everything is loaded before a socket is taken: a takeover serves at once.
        let prepared = geolb_resolver::prepare(source, config).await;
        let config = prepared.config();
        let taken = match (&handover, cli.takeover) {
            (Some(path), true) => match geolb_resolver::handover::take_over(path).await {
                Ok(Some(taken)) => Some(taken),
                Ok(None) => {
                    tracing::info!(path = %path.display(), "--takeover: no resolver runs on the handover socket; starting normally");
                    None
                }
                Err(e) => return Err(Failure::Start(e.into())),
            },
            (None, true) => {
                return Err(Failure::Start(anyhow::anyhow!(
                    "--takeover needs a handover socket: set [resolver] socket, handover_socket or [member] state_dir"
                )));
            }
            (_, false) => None,
        };
        let mut listeners = match taken {
            Some(taken) => from_taken(taken).map_err(Failure::Start)?,
            None => bind(&cli, &config, admin_addr).await.map_err(Failure::Start)?,
        };
        if let Some(path) = &handover {
            let replace = listeners.takeover.is_some();
            listeners.handover = Some(
                geolb_resolver::handover::HandoverListener::bind(path, replace)
                    .map_err(|e| Failure::Start(e.into()))?,
            );
            match exe {
                Ok(exe) => {
                    tokio::spawn(upgrade_on_signal(exe, shutdown.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "cannot find this binary: SIGUSR2 will not start an upgrade"),
            }
        }
        geolb_resolver::serve(prepared, listeners, shutdown).await.map_err(|e| Failure::Run(e.into()))?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// A listening socket from elsewhere (systemd, the resolver taken over from), served by tokio.
fn tokio_tcp(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The listeners passed by the resolver this one takes over from.
fn from_taken(taken: geolb_resolver::handover::Taken) -> anyhow::Result<geolb_resolver::Listeners> {
    let http = tokio_tcp(taken.http).context("cannot serve the HTTP listener taken over")?;
    let unix = match taken.unix {
        Some((listener, _, owned)) => Some(geolb_resolver::server::unix::Bound::adopt(listener, owned)?),
        None => None,
    };
    let admin = taken.admin.map(tokio_tcp).transpose().context("cannot serve the admin listener taken over")?;
    let notify = match taken.notify {
        Some(socket) => {
            socket.set_nonblocking(true)?;
            Some(tokio::net::UdpSocket::from_std(socket)?)
        }
        None => None,
    };
    tracing::info!("took over the listening sockets of the running resolver");
    Ok(geolb_resolver::Listeners { http, unix, admin, notify, handover: None, takeover: Some(taken.continuation) })
}

/// Binds the listeners, or takes them from systemd's socket activation (`LISTEN_FDS`) when it
/// passed one with the configured address.
async fn bind(
    cli: &Cli,
    config: &geolb_config::Config,
    admin_addr: Option<SocketAddr>,
) -> anyhow::Result<geolb_resolver::Listeners> {
    let socket_path = cli.socket.as_ref().or(config.resolver.socket.as_ref());
    let http_addr = cli.listen.unwrap_or(config.resolver.listen);
    let mut activated = Activated::from_env(socket_path.map(PathBuf::as_path), &[http_addr], admin_addr)?;
    let http = match activated.http.take() {
        Some(l) => l,
        None => {
            tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("failed to bind {http_addr}"))?
        }
    };
    let admin = match (activated.admin.take(), admin_addr) {
        (Some(l), _) => Some(l),
        (None, Some(addr)) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("failed to bind {addr}"))?)
        }
        (None, None) => None,
    };
    let unix = match (activated.unix.take(), socket_path) {
        (Some(bound), _) => Some(bound),
        (None, Some(path)) => Some(geolb_resolver::server::unix::bind(path, config.resolver.socket_mode)?),
        (None, None) => None,
    };
    let notify = match config.resolver.notify_listen {
        Some(addr) => {
            Some(tokio::net::UdpSocket::bind(addr).await.with_context(|| format!("failed to bind udp {addr}"))?)
        }
        None => None,
    };
    Ok(geolb_resolver::Listeners { http, unix, admin, notify, handover: None, takeover: None })
}

/// The sockets systemd passed (`geolb-resolver.socket`), matched to the configured ones by
/// address.
#[derive(Default)]
struct Activated {
    http: Option<tokio::net::TcpListener>,
    unix: Option<geolb_resolver::server::unix::Bound>,
    admin: Option<tokio::net::TcpListener>,
}

impl Activated {
    fn from_env(socket: Option<&Path>, http: &[SocketAddr], admin: Option<SocketAddr>) -> anyhow::Result<Activated> {
        let mut fds = listenfd::ListenFd::from_env();
        let mut activated = Activated::default();
        for idx in 0..fds.len() {
            if let Ok(Some(listener)) = fds.take_unix_listener(idx) {
                let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
                if path.is_some() && path.as_deref() == socket && activated.unix.is_none() {
                    tracing::info!(path = %path.as_deref().unwrap_or(Path::new("")).display(), "unix connector socket from systemd");
                    activated.unix = Some(geolb_resolver::server::unix::Bound::adopt(listener, false)?);
                } else {
                    tracing::warn!(?path, "systemd passed a unix socket that is not [resolver] socket; ignored");
                }
                continue;
            }
            if let Ok(Some(listener)) = fds.take_tcp_listener(idx) {
                let addr = listener.local_addr().ok();
                let slot = match addr {
                    Some(a) if http.contains(&a) && activated.http.is_none() => &mut activated.http,
                    Some(a) if Some(a) == admin && activated.admin.is_none() => &mut activated.admin,
                    _ => {
                        tracing::warn!(
                            ?addr,
                            "systemd passed a TCP socket that is neither [resolver] listen nor admin_listen; ignored"
                        );
                        continue;
                    }
                };
                tracing::info!(?addr, "listener from systemd");
                *slot = Some(tokio_tcp(listener)?);
                continue;
            }
            tracing::warn!(fd = idx + 3, "systemd passed a socket geolb does not use; ignored");
        }
        Ok(activated)
    }
}

/// On SIGUSR2, starts this binary again (from its path: a new version installed there) with the
/// same arguments and `--takeover`; the new process takes over once it has loaded, and a failed
/// one leaves this one serving.
async fn upgrade_on_signal(exe: PathBuf, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        tracing::warn!("cannot listen for SIGUSR2: upgrades need --takeover started by hand");
        return;
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).filter(|a| a != "--takeover").collect();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = usr2.recv() => {}
        }
        let mut command = tokio::process::Command::new(&exe);
        command.args(&args).arg("--takeover").stdin(std::process::Stdio::null());
        match command.spawn() {
            Ok(mut child) => {
                tracing::info!(pid = child.id(), exe = %exe.display(), "SIGUSR2: started the new resolver; it takes over once loaded");
                tokio::spawn(async move {
                    match child.wait().await {
                        Ok(status) if status.success() => {}
                        Ok(status) => tracing::error!(%status, "the new resolver stopped; this one goes on serving"),
                        Err(e) => tracing::error!(error = %e, "cannot wait for the new resolver"),
                    }
                });
            }
            Err(e) => tracing::error!(exe = %exe.display(), error = %e, "SIGUSR2: cannot start the new resolver"),
        }
    }
}
