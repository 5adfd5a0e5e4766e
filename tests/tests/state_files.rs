//! What a member finds in its `state_dir` is not trusted: real `geolb-resolver` and
//! `geolb-prober` processes on loopback with a FIFO where `drains.json` and `view.json` should be,
//! with a saved `drains.json` full of nodes that are no longer in the config (small enough to be
//! read, and 40 MB), and with a `state_dir` where nothing can be saved.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use geolb_tests::cluster::{ADMIN_TOKEN, CLUSTER_KEY, http, state};
use geolb_tests::{KillOnDrop, TestDir, unique_loopback, workspace_bin, workspace_root};
use tokio::time::Instant;

/// The shared part of every member's config: two PoPs, four nodes (nothing listens on their
/// check port: they are Down, which these tests do not look at), one service, `seeds`.
fn common(dir: &TestDir, seeds: &[SocketAddr]) -> Result<String> {
    std::fs::write(dir.join("cluster.key"), CLUSTER_KEY.replace(' ', ""))?;
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN)?;
    let mut t = format!(
        "default_location = {{ pop = \"fra\" }}\n[admin]\ntoken_file = \"{}\"\n[cluster]\nid = \"state\"\nkey_file = \"{}\"\ngossip_interval_ms = 100\nseeds = [{}]\n",
        dir.join("admin.token").display(),
        dir.join("cluster.key").display(),
        seeds.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
    );
    t.push_str("[checks]\nkind = \"tcp\"\nport = 9\ninterval_ms = 500\ntimeout_ms = 200\n");
    let zone = workspace_root().join("config/examples/example.net.zone");
    writeln!(t, "[[zones]]\norigin = \"example.net.\"\nfile = \"{}\"", zone.display())?;
    for (pop, lat, lon, region) in [("fra", 50.11, 8.68, "eu"), ("syd", -33.87, 151.21, "apac")] {
        writeln!(t, "[[pops]]\nid = \"{pop}\"\nlat = {lat}\nlon = {lon}\nregion = \"{region}\"")?;
        for n in 1..=2 {
            writeln!(t, "[[nodes]]\nid = \"{pop}-{n}\"\npop = \"{pop}\"\nipv4 = \"{}\"", unique_loopback())?;
        }
    }
    t.push_str("[[services]]\nname = \"cdn.example.net.\"\ntypes = [\"A\"]\nttl = 5\n");
    Ok(t)
}

/// Starts `geolb-resolver` as member `name` with its state in `dir/<name>`; returns at once.
fn spawn_resolver(dir: &TestDir, name: &str, seeds: &[SocketAddr]) -> Result<KillOnDrop> {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "{}[member]\nid = \"{name}\"\ngossip_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
        common(dir, seeds)?,
        dir.join(name).display()
    );
    std::fs::write(&path, text)?;
    KillOnDrop::spawn(
        name,
        Command::new(workspace_bin("geolb-resolver")?).arg("--config").arg(&path).args(["--listen", "127.0.0.1:0"]),
        dir.path(),
    )
}

/// Starts `geolb-prober` `name` at fra with its state in `dir/<name>`; returns at once.
fn spawn_prober(dir: &TestDir, name: &str, seeds: &[SocketAddr]) -> Result<KillOnDrop> {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "{}[prober]\nid = \"{name}\"\npop = \"fra\"\ngossip_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
        common(dir, seeds)?,
        dir.join(name).display()
    );
    std::fs::write(&path, text)?;
    KillOnDrop::spawn(name, Command::new(workspace_bin("geolb-prober")?).arg("--config").arg(&path), dir.path())
}

fn mkfifo(path: &Path) -> Result<()> {
    let status = Command::new("mkfifo").arg(path).status().context("mkfifo")?;
    ensure!(status.success(), "mkfifo {}: {status}", path.display());
    Ok(())
}

/// The resident set of process `pid`, in MB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// A `drains.json` as a member saves it: `stale` drained nodes and `stale` node overrides that
/// no config names (each saying why in `why_len` characters), then a drain of fra-1 and a Down
/// override of fra-2.
fn stale_drains(stale: usize, why_len: usize) -> String {
    let mut drains = String::new();
    let mut overrides = String::new();
    let why = "left over from an older fleet ".chars().cycle().take(why_len).collect::<String>();
    for i in 0..stale {
        write!(drains, "\"stale-node-{i:06}\":[1790000000000,true],").ok();
        write!(overrides, "\"ovr:node:stale-node-{i:06}\":\"1790000000000,down,0,admin,{why}\",").ok();
    }
    format!(
        "{{\"drains\":{{{drains}\"fra-1\":[1790000000000,true]}},\"overrides\":{{{overrides}\"ovr:node:fra-2\":\"1790000000000,down,0,admin,kept\"}}}}"
    )
}

/// The targets of the active overrides a member's gossip view holds.
async fn override_targets(admin: SocketAddr) -> Result<Vec<String>> {
    let (status, body) = http(admin, "GET", "/api/v1/overrides", None).await?;
    ensure!(status == 200, "GET /api/v1/overrides: {status} {body}");
    let start = body.find('[').context("no JSON array")?;
    let end = body.rfind(']').context("no JSON array")?;
    let list: serde_json::Value = serde_json::from_str(&body[start..=end])?;
    Ok(list
        .as_array()
        .context("not an array")?
        .iter()
        .map(|o| {
            format!("{}:{}", o["target"]["kind"].as_str().unwrap_or("?"), o["target"]["id"].as_str().unwrap_or("?"))
        })
        .collect())
}

/// A FIFO where `drains.json` and `view.json` should be: the resolver starts within seconds
/// without that saved state, says which file it skipped and why, and a SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_state_dir_does_not_hang_the_resolver() -> Result<()> {
    let dir = TestDir::new("state-fifo")?;
    let state_dir = dir.join("resolver-fifo");
    std::fs::create_dir_all(&state_dir)?;
    mkfifo(&state_dir.join("drains.json"))?;
    mkfifo(&state_dir.join("view.json"))?;
    let resolver = spawn_resolver(&dir, "resolver-fifo", &[])?;
    resolver.wait_for_log_line("admin listening on", Duration::from_secs(10)).await?;
    for file in ["drains.json", "view.json"] {
        let line = resolver.wait_for_log_line(&format!("{file}.*not a regular file"), Duration::from_secs(1)).await?;
        ensure!(line.contains(&state_dir.join(file).display().to_string()), "the line names the path: {line}");
    }
    resolver.signal("TERM")?;
    let status = resolver.wait_exit(Duration::from_secs(5)).await?;
    ensure!(status.success(), "the resolver stopped with {status}");
    Ok(())
}

/// 50,000 saved drains and overrides (25,000 of each) of nodes no config names (as after a fleet shrank, or
/// written by someone else), beside one drain and one override of configured nodes: only
/// those two reach the other members, and the start stays fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_saved_drains_are_not_republished() -> Result<()> {
    let dir = TestDir::new("state-stale")?;
    let prober = spawn_prober(&dir, "prober-0", &[])?;
    let prober_gossip = prober.wait_for_socket_addr("gossip listening on", Duration::from_secs(10)).await?;
    let prober_admin = prober.wait_for_socket_addr("admin listening on", Duration::from_secs(10)).await?;
    let state_dir = dir.join("resolver-stale");
    std::fs::create_dir_all(&state_dir)?;
    let text = stale_drains(25_000, 20);
    std::fs::write(state_dir.join("drains.json"), &text)?;
    let started = Instant::now();
    let resolver = spawn_resolver(&dir, "resolver-stale", &[prober_gossip])?;
    resolver.wait_for_log_line("admin listening on", Duration::from_secs(10)).await?;
    let start_up = started.elapsed();
    // The kept override reaches the prober; no stale one ever does.
    let deadline = Instant::now() + Duration::from_secs(15);
    let targets = loop {
        let targets = override_targets(prober_admin).await?;
        let stale: Vec<&String> = targets.iter().filter(|t| t.contains("stale")).collect();
        ensure!(
            stale.is_empty(),
            "{} stale overrides were republished, e.g. {:?}",
            stale.len(),
            &stale[..stale.len().min(3)]
        );
        if targets.contains(&"node:fra-2".to_owned()) {
            break targets;
        }
        ensure!(Instant::now() < deadline, "the kept override never reached the prober: {targets:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A few more gossip rounds: still nothing stale.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = override_targets(prober_admin).await?;
    ensure!(later == targets && later == ["node:fra-2"], "{later:?}");
    let s = state(prober_admin).await?;
    ensure!(s["nodes"]["fra-1"]["drained"] == true, "the kept drain did not arrive: {:#}", s["nodes"]);
    eprintln!(
        "drains.json of {} bytes: resolver up in {start_up:?}; RSS resolver {:?} MB, prober {:?} MB",
        text.len(),
        rss_mb(resolver.id()),
        rss_mb(prober.id())
    );
    ensure!(start_up < Duration::from_secs(5), "start-up took {start_up:?}");
    Ok(())
}

/// A 40 MB `drains.json` (400,000 stale entries) is not read at all: the resolver starts at
/// once, says why it skipped the file, and obeys SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_drains_file_is_skipped() -> Result<()> {
    let dir = TestDir::new("state-huge")?;
    let state_dir = dir.join("resolver-huge");
    std::fs::create_dir_all(&state_dir)?;
    let text = stale_drains(200_000, 100);
    ensure!(text.len() > 35_000_000, "{}", text.len());
    std::fs::write(state_dir.join("drains.json"), &text)?;
    let started = Instant::now();
    let resolver = spawn_resolver(&dir, "resolver-huge", &[])?;
    resolver.wait_for_log_line("admin listening on", Duration::from_secs(10)).await?;
    let start_up = started.elapsed();
    let line = resolver.wait_for_log_line("drains.json.*over the", Duration::from_secs(1)).await?;
    eprintln!(
        "drains.json of {} bytes: resolver up in {start_up:?}, RSS {:?} MB; {line}",
        text.len(),
        rss_mb(resolver.id())
    );
    ensure!(start_up < Duration::from_secs(5), "start-up took {start_up:?}");
    resolver.signal("TERM")?;
    let status = resolver.wait_exit(Duration::from_secs(5)).await?;
    ensure!(status.success(), "the resolver stopped with {status}");
    Ok(())
}

/// A drain this member cannot save answers 500 with the reason, and changes nothing; once the
/// file can be written again the same drain answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_cannot_be_saved_answers_500() -> Result<()> {
    let dir = TestDir::new("state-ro")?;
    let prober = spawn_prober(&dir, "prober-ro", &[])?;
    let admin = prober.wait_for_socket_addr("admin listening on", Duration::from_secs(10)).await?;
    // Nothing can be written in its place (a read-only state_dir, for root too).
    let blocker = dir.join("prober-ro").join("drains.json.tmp");
    std::fs::create_dir_all(&blocker)?;
    let (status, body) = http(admin, "POST", "/api/v1/nodes/fra-1/drain", Some(ADMIN_TOKEN)).await?;
    ensure!(status == 500 && body.contains("drains.json"), "{status} {body}");
    let s = state(admin).await?;
    ensure!(s["nodes"]["fra-1"]["drained"] == false, "a drain that was not saved was made: {:#}", s["nodes"]);
    std::fs::remove_dir(&blocker)?;
    let (status, body) = http(admin, "POST", "/api/v1/nodes/fra-1/drain", Some(ADMIN_TOKEN)).await?;
    ensure!(status == 200, "{status} {body}");
    let saved = std::fs::read_to_string(dir.join("prober-ro").join("drains.json"))?;
    ensure!(saved.contains("fra-1"), "{saved}");
    Ok(())
}
