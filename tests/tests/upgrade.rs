//! Upgrades and restarts of `geolb-resolver` under a steady query load through real PowerDNS
//! over the unix socket (the harness is `geolb_tests::restart`, shared with `bench/restart`):
//! an upgrade done the documented way fails no query, and a `kill -9` under socket activation
//! fails queries for no longer than the restart takes.

use std::time::Duration;

use anyhow::{Result, ensure};
use geolb_tests::load::Outcome;
use geolb_tests::restart::{KillStack, UpgradeStack, count};
use geolb_tests::{pdns_installed, query};

/// Asks the unix connector at `socket` PowerDNS's first call and checks the answer.
async fn initialize(socket: &std::path::Path) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut conn = tokio::net::UnixStream::connect(socket).await?;
    conn.write_all(b"{\"method\":\"initialize\",\"parameters\":{}}\n").await?;
    let mut line = String::new();
    tokio::io::BufReader::new(conn).read_line(&mut line).await?;
    ensure!(line.contains("true"), "initialize answered {line:?}");
    Ok(())
}

fn skip() -> bool {
    if !pdns_installed() {
        eprintln!("skipped: PowerDNS is not installed (bash scripts/setup.sh)");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_upgrades_under_load_fail_no_query_and_keep_the_answers_right() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let stack = UpgradeStack::start().await?;
    let upgrades = stack.upgrades(3, 200, Duration::from_millis(800)).await?;
    for (i, r) in upgrades.iter().enumerate() {
        ensure!(r.asked > 50, "upgrade {i}: only {} questions asked around it", r.asked);
        ensure!(r.failed.is_empty(), "upgrade {i}: {} of {} questions failed: {:?}", r.failed.len(), r.asked, r.failed);
    }
    // The last process answers as the first did: London's clients go to lhr.
    let london = query(stack.pdns.addr(), "cdn.example.net.", "A", Some("81.2.69.0/24".parse()?)).await?;
    let lhr = geolb_tests::stack::addresses_of(&stack.resolver.config, "lhr");
    ensure!(
        !london.addresses().is_empty() && london.addresses().iter().all(|a| lhr.contains(a)),
        "after the upgrades London got {:?}, not lhr {lhr:?}",
        london.addresses()
    );
    // Each handover passed PowerDNS's live connections (one per distributor thread at least).
    let log = stack.resolver.process.log();
    let passed: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("handed over the PowerDNS connections"))
        .filter_map(|l| l.split("connections=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    ensure!(passed.len() == 3 && passed.iter().all(|&n| n >= 1), "connections handed over per upgrade: {passed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_socket_activation_fails_queries_only_while_it_restarts() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let stack = KillStack::start().await?;
    let kills = stack.restarts("KILL", 2, 200, Duration::from_millis(800)).await?;
    for (i, r) in kills.iter().enumerate() {
        ensure!(r.asked > 50, "kill {i}: only {} questions asked around it", r.asked);
        ensure!(
            r.window <= r.took + Duration::from_millis(200) && r.window <= Duration::from_secs(1),
            "kill {i}: failures for {:?} although the restart took {:?}: {:?}",
            r.window,
            r.took,
            r.failed
        );
        // Connections wait in the kept socket's backlog: no connect is refused.
        ensure!(count(&r.failed, Outcome::Timeout) == 0 || r.window <= r.took, "kill {i}: timeouts after the restart");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_exits_2_so_systemd_does_not_restart_it_forever() -> Result<()> {
    let dir = geolb_tests::TestDir::new("geolb-bind-failure")?;
    let config = geolb_tests::stack::world_config(&dir, "")?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let status = tokio::process::Command::new(geolb_tests::workspace_bin("geolb-resolver")?)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(taken.local_addr()?.to_string())
        .arg("--socket")
        .arg(dir.join("pdns.sock"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), status).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "exit {:?} for an address in use: {stderr}", out.status.code());
    ensure!(stderr.contains("failed to bind"), "no reason given: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_resolver_without_takeover_is_refused_and_the_first_goes_on() -> Result<()> {
    let resolver = geolb_tests::stack::start_resolver("").await?;
    let dir = geolb_tests::TestDir::new("geolb-second")?;
    let config = geolb_tests::stack::world_config(&dir, "")?;
    let out = tokio::process::Command::new(geolb_tests::workspace_bin("geolb-resolver")?)
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--socket"])
        .arg(&resolver.socket)
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "exit {:?}: {stderr}", out.status.code());
    ensure!(stderr.contains("--takeover"), "the refusal does not say how to take over: {stderr}");
    ensure!(resolver.process.try_wait()?.is_none(), "the first resolver stopped");
    // It still answers on its socket.
    initialize(&resolver.socket).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_dies_before_serving_leaves_the_old_resolver_serving() -> Result<()> {
    let resolver = geolb_tests::stack::start_resolver("").await?;
    let mut handover = resolver.socket.as_os_str().to_owned();
    handover.push(".handover");
    // A successor that takes the listeners and goes away without saying it serves.
    let taken = geolb_resolver::handover::take_over(std::path::Path::new(&handover)).await?;
    ensure!(taken.is_some(), "nothing to take over at {handover:?}");
    drop(taken);
    resolver
        .process
        .wait_for_log_line("an upgrade failed: this resolver keeps serving", Duration::from_secs(15))
        .await?;
    ensure!(resolver.process.try_wait()?.is_none(), "the old resolver stopped");
    initialize(&resolver.socket).await?;
    // And a real upgrade still works afterwards.
    let next = geolb_tests::restart::upgrade(&resolver.process, resolver.process.id(), Duration::from_secs(20)).await?;
    let _guard = geolb_tests::restart::PidGuard(next);
    Ok(())
}
