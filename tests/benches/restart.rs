//! Restart benchmark: `geolb-resolver` behind real PowerDNS over the unix socket, a steady UDP
//! query load through PowerDNS (a geo name and a static one, caches off), then
//!
//! 1. `--upgrades N` upgrades the documented way for plain processes (SIGUSR2: the binary starts
//!    again with `--takeover` and takes the listeners and live connections over), and
//! 2. `--kills N` `kill -9`s of a resolver run as under systemd with `geolb-resolver.socket` and
//!    `Restart=always` (a supervisor holds the sockets and restarts it after the unit's
//!    `RestartSec=`, passing them as `LISTEN_FDS`), and
//! 3. `--restarts N` plain restarts the same way (SIGTERM, as `systemctl restart`): the baseline
//!    an upgrade is compared with, measured in the same run.
//!
//! It prints the failed answers (SERVFAIL, other errors, timeouts) per upgrade, with `0 SERVFAIL`
//! as the target, against the plain restarts, and the kill -9 window (signal to the last failed
//! answer) against the 1 s target. Run it with `bench/restart` (release binaries).

use std::time::Duration;

use anyhow::{Result, bail};
use geolb_tests::load::Outcome;
use geolb_tests::restart::{KillStack, Restart, UpgradeStack, unit_restart_sec};

struct Params {
    upgrades: usize,
    kills: usize,
    restarts: usize,
    rate: u32,
    pause: Duration,
}

fn params() -> Result<Params> {
    let mut p = Params { upgrades: 20, kills: 10, restarts: 10, rate: 500, pause: Duration::from_millis(1500) };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--upgrades" => p.upgrades = value()?.parse()?,
            "--kills" => p.kills = value()?.parse()?,
            "--restarts" => p.restarts = value()?.parse()?,
            "--rate" => p.rate = value()?.parse()?,
            "--pause-ms" => p.pause = Duration::from_millis(value()?.parse()?),
            other => {
                bail!("unknown argument {other} (--upgrades N, --kills N, --restarts N, --rate Q/S, --pause-ms MS)")
            }
        }
    }
    Ok(p)
}

fn servfails(r: &Restart) -> usize {
    r.failed.iter().filter(|a| a.outcome == Outcome::ServFail).count()
}

/// SERVFAIL and all failed answers, per restart.
fn per(restarts: &[Restart]) -> (f64, f64) {
    let n = restarts.len().max(1) as f64;
    (
        restarts.iter().map(servfails).sum::<usize>() as f64 / n,
        restarts.iter().map(|r| r.failed.len()).sum::<usize>() as f64 / n,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn summary(label: &str, values: &mut [Duration]) {
    values.sort();
    if values.is_empty() {
        return;
    }
    let p50 = values[values.len() / 2];
    let max = values[values.len() - 1];
    println!("  {label}: p50 {}, max {}", ms(p50), ms(max));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let p = params()?;
    geolb_tests::quiet_logs();
    println!(
        "restart bench: {} q/s through PowerDNS (unix socket, caches off), {} upgrades, {} kill -9, {} plain restarts, {} apart",
        p.rate,
        p.upgrades,
        p.kills,
        p.restarts,
        ms(p.pause)
    );
    let mut per_upgrade = None;
    if p.upgrades > 0 {
        let stack = UpgradeStack::start().await?;
        let upgrades = stack.upgrades(p.upgrades, p.rate, p.pause).await?;
        let asked: usize = upgrades.iter().map(|r| r.asked).sum();
        println!("\nupgrades (SIGUSR2 → --takeover), {asked} questions:");
        for (i, r) in upgrades.iter().enumerate() {
            println!(
                "  #{:<2} took {:>7}, {} asked, {} SERVFAIL, {} failed",
                i + 1,
                ms(r.took),
                r.asked,
                servfails(r),
                r.failed.len()
            );
        }
        summary("signal to old process gone", &mut upgrades.iter().map(|r| r.took).collect::<Vec<_>>());
        per_upgrade = Some(per(&upgrades));
    }
    let mut per_restart = None;
    if p.kills + p.restarts > 0 {
        let restart_sec = unit_restart_sec()?;
        let stack = KillStack::start().await?;
        if p.restarts > 0 {
            let restarts = stack.restarts("TERM", p.restarts, p.rate, p.pause).await?;
            println!("\nplain restarts (SIGTERM, socket activation, RestartSec={}):", ms(restart_sec));
            for (i, r) in restarts.iter().enumerate() {
                println!(
                    "  #{:<2} serving again after {:>7}, {} asked, {} SERVFAIL, {} failed",
                    i + 1,
                    ms(r.took),
                    r.asked,
                    servfails(r),
                    r.failed.len()
                );
            }
            per_restart = Some(per(&restarts));
        }
        if p.kills > 0 {
            let kills = stack.restarts("KILL", p.kills, p.rate, p.pause).await?;
            println!("\nkill -9 (socket activation, RestartSec={}):", ms(restart_sec));
            for (i, r) in kills.iter().enumerate() {
                println!(
                    "  #{:<2} serving again after {:>7}, {} asked, {} failed, window {}",
                    i + 1,
                    ms(r.took),
                    r.asked,
                    r.failed.len(),
                    ms(r.window)
                );
            }
            summary("serving again after", &mut kills.iter().map(|r| r.took).collect::<Vec<_>>());
            let mut windows: Vec<Duration> = kills.iter().map(|r| r.window).collect();
            summary("kill -9 window (signal to last failed answer)", &mut windows);
            let failed: usize = kills.iter().map(|r| r.failed.len()).sum();
            let worst = windows.iter().max().copied().unwrap_or_default();
            println!(
                "kill -9 window: max {} ({:.1} failed answers per kill)   target: <= 1000 ms",
                ms(worst),
                failed as f64 / kills.len() as f64
            );
        }
    }
    println!();
    if let Some((servfail, failed)) = per_restart {
        println!(
            "baseline, plain restart: SERVFAIL per restart: {servfail:.2}, failed answers per restart: {failed:.2}"
        );
    }
    if let Some((servfail, failed)) = per_upgrade {
        println!("SERVFAIL per upgrade: {servfail:.2}, failed answers per upgrade: {failed:.2}   target: 0 SERVFAIL");
    }
    Ok(())
}
