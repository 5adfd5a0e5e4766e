//! What both programs do the same way as processes: common command-line arguments, logging,
//! and signals (SIGTERM/SIGINT cancel the run; a second one exits).

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// Command-line arguments both programs take (flattened into each one's own).
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// The config file.
    #[arg(long, short, default_value = "/etc/geolb/geolb.toml")]
    pub config: PathBuf,
    /// Validate the config (and open the files it names), print every problem and warning, and
    /// exit: 0 when valid, 2 when not.
    #[arg(long)]
    pub check_config: bool,
    /// Admin API address, overriding the config's `admin_listen` (port 0 picks one; it is logged).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Gossip UDP address, overriding the config's `gossip_listen` (port 0 picks one; it is logged).
    #[arg(long)]
    pub gossip_listen: Option<SocketAddr>,
    /// Log filter, e.g. `info` or `geolb_prober=debug` (RUST_LOG works too).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log line format: `text` (colours only when stderr is a terminal and `NO_COLOR` is
    /// unset) or `json` (one object per line, for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl CommonArgs {
    /// Makes the config path absolute (watching for changes needs its directory, also for
    /// `--config geolb.toml`) and starts logging.
    pub fn init(&mut self) {
        if let Ok(absolute) = std::path::absolute(&self.config) {
            self.config = absolute;
        }
        init_tracing(&self.log_level, self.log_format);
    }
}

/// Exit code for a config that does not load or validate.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for any other start failure a restart does not cure (an address in use, a socket
/// path taken): the same as a bad config, so one `RestartPreventExitStatus=2` stops the loop.
pub const EXIT_START: u8 = 2;

/// Whether an error (with its sources) is one a restart does not cure: an address that is in use,
/// not on this machine, or not ours to bind.
pub fn unrecoverable<'e>(mut chain: impl Iterator<Item = &'e (dyn std::error::Error + 'static)>) -> bool {
    chain.any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::AddrInUse
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::PermissionDenied
            )
        })
    })
}

/// The async runtime of either program: `threads` = 1 is a current-thread runtime, more a
/// multi-thread one with that many workers.
///
/// One thread is the default of both: their work is mostly waiting on sockets, and a
/// single-threaded runtime never pays for waking idle worker threads (futex calls, context
/// switches). Measured: the prober's checks cost less CPU than those wakeups did, and the
/// resolver behind PowerDNS's unix connector answered ~12 % more queries/s (bench/dns-qps, A/B
/// in one window). Blocking work (zone and GeoIP loads, view saves) runs on tokio's blocking
/// pool either way. A later reload cannot change this.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

/// Cancels `shutdown` on SIGTERM or SIGINT; a second signal exits the process at once.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
    // A second signal means "now": don't wait for connections to drain.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting at once");
    std::process::exit(1);
}

/// Sets up logging to stderr: `RUST_LOG` when set, else `level`. Colours only on a terminal:
/// the journal and log files get plain text.
pub fn init_tracing(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// Calls `reload` whenever one of the watched files changes, on SIGHUP, or when `wake` is
/// notified (a new fleet document is stored: [`crate::fleet::ConfigSource::reload_wanted`]),
/// until `shutdown`. `reload` returns the files to watch from then on (a new config may name
/// others). One loop, so reloads never overlap.
pub async fn reload_on_change<F, Fut>(
    files: Vec<PathBuf>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    mut reload: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<PathBuf>>,
{
    use geolb_config::watch::{ConfigWatcher, Trigger};
    let mut watcher = ConfigWatcher::new(files);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            trigger = watcher.next() => {
                if trigger == Trigger::Hangup {
                    tracing::info!("SIGHUP: reloading");
                }
            }
            _ = wake.notified() => tracing::debug!("new fleet document: reloading"),
        }
        watcher.set_files(reload().await);
    }
}
