//! Distributed health end to end: three probers check stand-in CDN nodes and gossip, two
//! resolvers fold the quorum, each behind a real PowerDNS. All on loopback.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::cluster::{
    ADMIN_TOKEN, Cluster, NodeServer, healths, http, http_with_body, metric, metrics, start_two_pops, state,
};
use ipnet::IpNet;
use tokio::time::Instant;

const FRA_CLIENT: &str = "198.51.100.0/24";

async fn start(probers: usize) -> Result<(Cluster, Vec<NodeServer>)> {
    start_with(probers, None).await
}

async fn start_with(probers: usize, blind_prober: Option<usize>) -> Result<(Cluster, Vec<NodeServer>)> {
    start_two_pops(probers, blind_prober, FRA_CLIENT).await
}

/// Waits until every resolver sees every node Up.
async fn all_up(cluster: &Cluster, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut ok = true;
        for r in &cluster.resolvers {
            let h = healths(&state(r.admin).await?);
            ok &= h.len() == 4 && h.values().all(|v| v == "up");
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            let s = state(cluster.resolvers[0].admin).await?;
            bail!("not all nodes up within {within:?}: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fra client's answer from every PowerDNS.
async fn answers(cluster: &Cluster) -> Result<Vec<IpAddr>> {
    let net: IpNet = FRA_CLIENT.parse()?;
    let mut out = Vec::new();
    for r in &cluster.resolvers {
        let pdns = r.pdns.as_ref().context("no pdns")?;
        let resp = pdns.query("cdn.example.net.", "A", Some(net)).await?;
        ensure!(resp.rcode == "NOERROR", "{resp}");
        out.push(*resp.addresses().first().with_context(|| format!("no address: {resp}"))?);
    }
    Ok(out)
}

/// Waits until every PowerDNS answers the fra client with `want(ip)`; returns the time taken.
async fn until_answers(cluster: &Cluster, within: Duration, want: impl Fn(IpAddr) -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let a = answers(cluster).await?;
        if a.iter().all(|ip| want(*ip)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("answers still {a:?} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_the_answers_and_comes_back_after_rise() -> Result<()> {
    let (cluster, mut servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let first = answers(&cluster).await?;
    ensure!(first.iter().collect::<BTreeSet<_>>().len() == 1, "resolvers disagree: {first:?}");
    let victim = first[0];
    let index = servers.iter().position(|s| s.addr.ip() == victim).context("answer is not a node")?;
    ensure!(index < 2, "the fra client got a non-fra node {victim}");
    servers[index].stop();
    let gone = until_answers(&cluster, Duration::from_secs(10), |ip| ip != victim).await?;
    let other = servers[1 - index].addr.ip();
    ensure!(answers(&cluster).await?.iter().all(|ip| *ip == other), "the other fra node takes over");
    eprintln!("node failure -> every resolver's answer changed in {gone:?}");
    // Back only after `rise` (2) successful checks, and then the client returns to it (stable).
    servers[index].restart().await?;
    let back = until_answers(&cluster, Duration::from_secs(10), |ip| ip == victim).await?;
    eprintln!("node recovery -> back in answers in {back:?}");
    ensure!(back >= Duration::from_millis(300), "came back faster than two check intervals: {back:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_prober_under_queries_gives_no_wrong_answer() -> Result<()> {
    let (cluster, _servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let fra: BTreeSet<IpAddr> = cluster.spec.nodes.iter().filter(|n| n.1 == "fra").map(|n| n.2.ip()).collect();
    let before = answers(&cluster).await?;
    cluster.probers[1].process.kill()?;
    let start = Instant::now();
    let mut queries = 0;
    while start.elapsed() < Duration::from_secs(6) {
        for ip in answers(&cluster).await? {
            ensure!(fra.contains(&ip), "wrong answer {ip} while a prober died");
            ensure!(before.contains(&ip), "the answer moved ({before:?} -> {ip}) though every node is up");
            queries += 1;
        }
    }
    ensure!(queries > 20, "too few queries: {queries}");
    // The dead prober is seen as not live, and every node is still Up with the two others.
    let s = state(cluster.resolvers[0].admin).await?;
    ensure!(healths(&s).values().all(|h| h == "up"), "{s:#}");
    let dead =
        s["members"].as_array().context("members")?.iter().find(|m| m["id"] == "prober-1").context("prober-1")?;
    ensure!(dead["live"] == false, "{dead}");
    Ok(())
}

/// The members' `impaired` flags by id.
fn impaired_probers(s: &serde_json::Value) -> Result<BTreeSet<String>> {
    Ok(s["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter(|m| m["role"] == "prober" && m["impaired"] == true)
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_cut_off_from_every_node_is_impaired_and_takes_nothing_down() -> Result<()> {
    // prober-2 reaches no node at all, as if its uplink were cut; the others reach them all.
    let (cluster, _servers) = start_with(3, Some(2)).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let start = Instant::now();
    let mut seen_impaired = false;
    while start.elapsed() < Duration::from_secs(4) {
        for r in &cluster.resolvers {
            let s = state(r.admin).await?;
            ensure!(healths(&s).values().all(|h| h == "up"), "a node went down because one prober is cut off: {s:#}");
            seen_impaired |= impaired_probers(&s)? == BTreeSet::from(["prober-2".to_owned()]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(seen_impaired, "prober-2 was never reported impaired");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_pop_down_moves_its_clients_and_every_node_down_fails_open() -> Result<()> {
    // Every prober sees the same outage, so none of them doubts itself: the nodes go Down.
    let (cluster, mut servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let fra: BTreeSet<IpAddr> = servers[..2].iter().map(|s| s.addr.ip()).collect();
    let syd: BTreeSet<IpAddr> = servers[2..].iter().map(|s| s.addr.ip()).collect();
    // The whole fra PoP dark: its clients go to syd.
    servers[0].stop();
    servers[1].stop();
    let moved = until_answers(&cluster, Duration::from_secs(10), |ip| syd.contains(&ip)).await?;
    eprintln!("whole PoP down -> its clients moved in {moved:?}");
    // A prober may doubt itself for a moment, until its peers' Down verdicts reach it; then the
    // shared view says "outage", not "sick prober".
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = state(cluster.resolvers[0].admin).await?;
        if impaired_probers(&s)?.is_empty() {
            break;
        }
        ensure!(Instant::now() < deadline, "an outage seen by every prober left probers impaired: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every node dark: all Down, and `fail_open` keeps answering the nearest PoP's nodes.
    servers[2].stop();
    servers[3].stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(cluster.resolvers[0].admin).await?;
        if healths(&s).values().all(|h| h == "down") {
            break;
        }
        ensure!(Instant::now() < deadline, "not every node went down: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_answers(&cluster, Duration::from_secs(5), |ip| fra.contains(&ip)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reaches_every_resolver_and_survives_a_restart_of_every_member() -> Result<()> {
    let (mut cluster, _servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let victim = answers(&cluster).await?[0];
    let id = cluster.node_of(victim).context("node")?.to_owned();
    let (status, body) =
        http(cluster.resolvers[0].admin, "POST", &format!("/api/v1/nodes/{id}/drain"), Some("wrong")).await?;
    ensure!(status == 401, "{status} {body}");
    let (status, body) =
        http(cluster.resolvers[0].admin, "POST", &format!("/api/v1/nodes/{id}/drain"), Some(ADMIN_TOKEN)).await?;
    ensure!(status == 200, "{status} {body}");
    until_answers(&cluster, Duration::from_secs(5), |ip| ip != victim).await?;
    // Restart every member (probers, then resolvers), same ids and state dirs.
    for i in 0..cluster.probers.len() {
        cluster.probers[i].process.kill()?;
    }
    for i in 0..cluster.probers.len() {
        let m = cluster.start_prober(i).await?;
        cluster.probers[i] = m;
    }
    for i in 0..cluster.resolvers.len() {
        cluster.resolvers[i].process.kill()?;
        let m = cluster.start_resolver(i).await?;
        cluster.resolvers[i] = m;
    }
    all_up(&cluster, Duration::from_secs(20)).await?;
    let s = state(cluster.resolvers[1].admin).await?;
    ensure!(s["nodes"][&id]["drained"] == true, "drain lost in the restart: {s:#}");
    ensure!(answers(&cluster).await?.iter().all(|ip| *ip != victim), "a drained node is answered");
    let (status, _) =
        http(cluster.resolvers[1].admin, "POST", &format!("/api/v1/nodes/{id}/undrain"), Some(ADMIN_TOKEN)).await?;
    ensure!(status == 200);
    until_answers(&cluster, Duration::from_secs(5), |ip| ip == victim).await?;

    // A second prober on prober 0's config (its own ports) would share its state_dir: it
    // refuses to start instead of overwriting the saved drains.
    let twin = geolb_tests::KillOnDrop::spawn(
        "geolb-prober-twin",
        std::process::Command::new(geolb_tests::workspace_bin("geolb-prober")?)
            .arg("--config")
            .arg(&cluster.probers[0].config)
            .args(["--admin-listen", "127.0.0.1:0", "--gossip-listen", "127.0.0.1:0"]),
        cluster.dir.path(),
    )?;
    let status = twin.wait_exit(Duration::from_secs(10)).await?;
    ensure!(!status.success(), "the twin prober exited {status}");
    ensure!(twin.log().contains("in use by another geolb process"), "{}", twin.log());

    // A new token in the token file takes effect without a restart or SIGHUP, in probers and
    // resolvers alike (the file is watched); the old one stops working.
    let rotated = "geolb-test-rotated-token-9876543210";
    std::fs::write(cluster.dir.join("admin.token"), rotated)?;
    let undrain = format!("/api/v1/nodes/{id}/undrain");
    for admin in [cluster.probers[0].admin, cluster.resolvers[0].admin] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = http(admin, "POST", &undrain, Some(rotated)).await?;
            if status == 200 {
                break;
            }
            ensure!(status == 401 && Instant::now() < deadline, "{admin}: the rotated token: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, body) = http(admin, "POST", &undrain, Some(ADMIN_TOKEN)).await?;
        ensure!(status == 401, "{admin}: the old token still works: {status} {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_resolver_serves_its_last_view_not_all_up() -> Result<()> {
    let (mut cluster, mut servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    // /readyz: every member hears the three probers (a prober folds once a second).
    for admin in [cluster.probers[0].admin, cluster.resolvers[0].admin] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = http(admin, "GET", "/readyz", None).await?;
            ensure!(status == 200, "{admin}: {status} {body}");
            if body.contains("3 of 3 probers can vote") {
                break;
            }
            ensure!(Instant::now() < deadline, "{admin}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let victim = answers(&cluster).await?[0];
    let index = servers.iter().position(|s| s.addr.ip() == victim).context("answer is not a node")?;
    servers[index].stop();
    until_answers(&cluster, Duration::from_secs(10), |ip| ip != victim).await?;
    // No prober left: after its restart the resolver has no quorum to learn from, only the
    // view it saved. It must keep the dead node out (for the grace period), not answer "all up".
    for p in &cluster.probers {
        p.process.kill()?;
    }
    cluster.resolvers[0].process.kill()?;
    cluster.resolvers[0] = cluster.start_resolver(0).await?;
    let log = cluster.resolvers[0].process.log();
    ensure!(log.contains("restored the last saved health view"), "{log}");
    // It serves the saved view, but says it is not current.
    let (status, body) = http(cluster.resolvers[0].admin, "GET", "/readyz", None).await?;
    ensure!(status == 503 && body.contains("not ready"), "{status} {body}");
    for _ in 0..10 {
        let a = answers(&cluster).await?;
        ensure!(a[0] != victim, "the restarted resolver answered the dead node {victim}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_is_rejected_counted_and_changes_nothing() -> Result<()> {
    let (cluster, _servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let target = &cluster.resolvers[0];
    let rejected = |s: &serde_json::Value| {
        [
            "bad_magic",
            "bad_tag",
            "stale",
            "replay",
            "spoofed_sender",
            "wrong_receiver",
            "malformed",
            "oversize",
            "old_format",
        ]
        .iter()
        .map(|k| s["gossip"][k].as_u64().unwrap_or(0))
        .sum::<u64>()
    };
    let before = rejected(&state(target.admin).await?);
    // Datagrams that claim to be gossip but carry no valid tag for the cluster key: our frame's
    // magic followed by noise, and plain noise, from a loopback socket of our own.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for i in 0..20u8 {
        let mut datagram = b"GLB3".to_vec();
        datagram.extend((0..200u16).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i)));
        socket.send_to(&datagram, target.gossip).await?;
        socket.send_to(&[i; 64], target.gossip).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = state(target.admin).await?;
    ensure!(rejected(&s) >= before + 40, "forged datagrams not all rejected: {:#}", s["gossip"]);
    ensure!(healths(&s).values().all(|h| h == "up"), "forged gossip changed the view: {s:#}");
    Ok(())
}

/// Prober 0's own verdict on `node` in its state API: (up, since).
fn own_verdict(s: &serde_json::Value, node: &str) -> Option<(bool, u64)> {
    let v = &s["nodes"][node]["probers"]["prober-0"];
    Some((v["up"].as_bool()?, v["since_ms"].as_u64()?))
}

/// Polls prober 0's state until `want` holds for its verdict on `node`.
async fn until_own_verdict(
    cluster: &Cluster,
    node: &str,
    within: Duration,
    want: impl Fn(Option<(bool, u64)>) -> bool,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let s = state(cluster.probers[0].admin).await?;
        if want(own_verdict(&s, node)) {
            return Ok(s);
        }
        ensure!(Instant::now() < deadline, "prober-0's verdict on {node} not as wanted within {within:?}: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_reloads_its_config_keeping_health_state_and_refuses_a_broken_one() -> Result<()> {
    let (cluster, servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let prober = &cluster.probers[0];
    let before = until_own_verdict(&cluster, "fra-1", Duration::from_secs(5), |v| v.is_some_and(|(up, _)| up)).await?;
    let fra1_since = own_verdict(&before, "fra-1").context("no verdict on fra-1")?;
    // The config names syd-2 exactly as ClusterSpec writes it; point its check at a closed port.
    let original = std::fs::read_to_string(&prober.config)?;
    let syd2 = servers[3].addr;
    let block =
        format!("id = \"syd-2\"\npop = \"syd\"\nipv4 = \"{}\"\ncheck = {{ port = {} }}", syd2.ip(), syd2.port());
    ensure!(original.contains(&block), "syd-2 not found in {original}");
    let changed = original.replace(&block, &block.replace(&format!("port = {}", syd2.port()), "port = 9"));
    std::fs::write(&prober.config, &changed)?;

    // The file change applies: prober 0 now finds syd-2 down; the others' verdicts keep their
    // `since` (reloading lost no state), and one prober alone takes nothing down.
    let s = until_own_verdict(&cluster, "syd-2", Duration::from_secs(10), |v| v.is_some_and(|(up, _)| !up)).await?;
    ensure!(own_verdict(&s, "fra-1") == Some(fra1_since), "fra-1's verdict restarted: {s:#}");
    for r in &cluster.resolvers {
        let h = healths(&state(r.admin).await?);
        ensure!(h.get("syd-2").map(String::as_str) == Some("up"), "one prober took syd-2 down: {h:?}");
    }

    // A broken config is refused with its errors; the running one stays.
    std::fs::write(&prober.config, format!("{changed}\n[[nodes]]\nid = \"x\"\npop = \"nowhere\"\n"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !prober.process.log().contains("reload refused") {
        ensure!(Instant::now() < deadline, "no refusal logged:\n{}", prober.process.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = prober.process.log();
    ensure!(log.contains("nodes[4].pop") && log.contains("nowhere"), "the refusal names the problem:\n{log}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = state(prober.admin).await?;
    ensure!(own_verdict(&s, "syd-2").is_some_and(|(up, _)| !up), "the running config changed: {s:#}");
    ensure!(own_verdict(&s, "fra-1") == Some(fra1_since), "fra-1's verdict restarted: {s:#}");

    // SIGHUP reloads too: the original config brings syd-2 back after `rise`.
    std::fs::write(&prober.config, &original)?;
    let status = std::process::Command::new("kill").arg("-HUP").arg(prober.process.id().to_string()).status()?;
    ensure!(status.success(), "kill -HUP failed");
    until_own_verdict(&cluster, "syd-2", Duration::from_secs(10), |v| v.is_some_and(|(up, _)| up)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_programs_export_what_they_do_as_prometheus_metrics() -> Result<()> {
    let (cluster, _servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let served = answers(&cluster).await?;
    ensure!(!served.is_empty(), "no answer");

    let value = |text: &str, name: &str, labels: &[(&str, &str)]| {
        metric(text, name, labels).with_context(|| format!("no {name} {labels:?} in\n{text}"))
    };
    // A prober refolds on gossip changes and at least every 5 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let prober = loop {
        let text = metrics(cluster.probers[0].admin).await?;
        if metric(&text, "geolb_cluster_node_up", &[("node", "fra-2")]) == Some(1.0) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(value(&prober, "geolb_build_info", &[("component", "prober")])? == 1.0);
    ensure!(value(&prober, "geolb_prober_checks_total", &[("node", "fra-1"), ("result", "up")])? >= 2.0);
    ensure!(value(&prober, "geolb_prober_check_duration_seconds_count", &[])? >= 8.0);
    ensure!(value(&prober, "geolb_prober_verdict_up", &[("prober", "prober-0"), ("node", "syd-2")])? == 1.0);
    ensure!(value(&prober, "geolb_cluster_node_up", &[("node", "fra-2")])? == 1.0);
    ensure!(value(&prober, "geolb_cluster_node_decision", &[("node", "fra-2"), ("reason", "quorum_up")])? == 1.0);
    ensure!(value(&prober, "geolb_cluster_prober_live", &[("prober", "prober-2")])? == 1.0);
    ensure!(value(&prober, "geolb_cluster_prober_impaired", &[("prober", "prober-1")])? == 0.0);
    ensure!(value(&prober, "geolb_gossip_bytes_total", &[("direction", "received")])? > 0.0);
    ensure!(value(&prober, "geolb_gossip_rejected_total", &[("reason", "bad_tag")])? == 0.0);
    ensure!(value(&prober, "geolb_config_reloads_total", &[("result", "refused")])? == 0.0);

    // The resolver: on its admin API and on the connector PowerDNS talks to.
    let resolver = &cluster.resolvers[0];
    let connector = resolver.dns_url.as_deref().context("no connector")?;
    let connector: std::net::SocketAddr =
        connector.trim_start_matches("http://").trim_end_matches("/dns").parse().context("connector address")?;
    for text in [metrics(resolver.admin).await?, metrics(connector).await?] {
        ensure!(value(&text, "geolb_build_info", &[("component", "resolver")])? == 1.0);
        ensure!(value(&text, "geolb_resolver_lookups_total", &[("qtype", "ANY"), ("outcome", "answered")])? >= 1.0);
        ensure!(value(&text, "geolb_resolver_lookup_duration_seconds_count", &[])? >= 1.0);
        // The fra client was answered from fra: counted per node, at a distance under 1000 km.
        let mut fra = 0.0;
        for node in ["fra-1", "fra-2"] {
            fra += value(&text, "geolb_resolver_answers_total", &[("pop", "fra"), ("node", node)])?;
        }
        ensure!(fra >= 1.0, "no fra answer counted:\n{text}");
        let near = value(&text, "geolb_resolver_answer_distance_kilometers_bucket", &[("le", "1000")])?;
        ensure!(near >= 1.0 && near == value(&text, "geolb_resolver_answer_distance_kilometers_count", &[])?);
        ensure!(value(&text, "geolb_resolver_view_age_seconds", &[])? >= 0.0);
        ensure!(value(&text, "geolb_cluster_node_up", &[("node", "syd-1")])? == 1.0);
        ensure!(value(&text, "geolb_gossip_datagrams_total", &[("direction", "sent")])? > 0.0);
    }
    Ok(())
}

/// `POST /api/v1/overrides` with the admin token: (status, body).
async fn set_override(admin: std::net::SocketAddr, body: serde_json::Value) -> Result<(u16, String)> {
    http_with_body(admin, "POST", "/api/v1/overrides", Some(ADMIN_TOKEN), &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_overrides_force_a_node_and_drain_a_pop_on_every_resolver_and_expire() -> Result<()> {
    let (cluster, mut servers) = start(3).await?;
    all_up(&cluster, Duration::from_secs(20)).await?;
    let victim = answers(&cluster).await?[0];
    let index = servers.iter().position(|s| s.addr.ip() == victim).context("answer is not a node")?;
    let other = servers[1 - index].addr.ip();
    let victim_id = cluster.node_of(victim).context("victim id")?.to_owned();
    let other_id = cluster.node_of(other).context("other id")?.to_owned();
    let syd: Vec<IpAddr> = servers[2..].iter().map(|s| s.addr.ip()).collect();
    let p0 = cluster.probers[0].admin;

    // Refusals: an unknown node, a PoP forced up, no reason, a read-only caller.
    let (status, body) =
        set_override(p0, serde_json::json!({"target": "node:nope", "action": "down", "why": "x"})).await?;
    ensure!(status == 422 && body.contains("unknown node"), "{status} {body}");
    let (status, body) = set_override(p0, serde_json::json!({"target": "pop:fra", "action": "up", "why": "x"})).await?;
    ensure!(status == 422, "{status} {body}");
    let (status, body) =
        set_override(p0, serde_json::json!({"target": format!("node:{victim_id}"), "action": "down", "why": " "}))
            .await?;
    ensure!(status == 422 && body.contains("why"), "{status} {body}");
    let (status, _) = http_with_body(
        p0,
        "POST",
        "/api/v1/overrides",
        Some(geolb_tests::cluster::VIEWER_TOKEN),
        &serde_json::json!({"target": "pop:fra", "action": "drain", "why": "x"}).to_string(),
    )
    .await?;
    ensure!(status == 403, "a read-only token set an override: {status}");

    // Forced down on one prober's API: every resolver stops answering the node.
    let (status, body) = set_override(
        p0,
        serde_json::json!({"target": format!("node:{victim_id}"), "action": "down", "why": "disk replacement"}),
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    until_answers(&cluster, Duration::from_secs(5), |ip| ip == other).await?;
    let s = state(cluster.resolvers[1].admin).await?;
    ensure!(s["nodes"][&victim_id]["reason"] == "forced_down", "{:#}", s["nodes"][&victim_id]);
    let o = s["overrides"].as_array().context("overrides")?;
    ensure!(o.len() == 1 && o[0]["by"] == "admin" && o[0]["why"] == "disk replacement", "{o:?}");

    // The whole PoP drained: its clients go to syd.
    let (status, body) =
        set_override(p0, serde_json::json!({"target": "pop:fra", "action": "drain", "why": "fra maintenance"})).await?;
    ensure!(status == 200, "{status} {body}");
    until_answers(&cluster, Duration::from_secs(5), |ip| syd.contains(&ip)).await?;
    for target in ["pop:fra".to_owned(), format!("node:{victim_id}")] {
        let (status, body) = set_override(
            cluster.resolvers[0].admin,
            serde_json::json!({"target": target, "action": "clear", "why": "done"}),
        )
        .await?;
        ensure!(status == 200, "{status} {body}");
    }
    until_answers(&cluster, Duration::from_secs(5), |ip| ip == victim).await?;

    // Forced up for 3 s: the node stays answered though it is stopped, then the probers' Down
    // takes over by itself.
    let (status, body) = set_override(
        p0,
        serde_json::json!({"target": format!("node:{victim_id}"), "action": "up", "why": "checks are wrong", "ttl_s": 3}),
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    until_answers(&cluster, Duration::from_secs(5), |ip| ip == victim).await?;
    servers[index].stop();
    let held = tokio::time::Instant::now();
    let moved = until_answers(&cluster, Duration::from_secs(10), |ip| ip == other).await?;
    ensure!(held.elapsed() >= Duration::from_millis(1500), "the forced Up did not hold: moved after {moved:?}");
    let s = state(cluster.resolvers[0].admin).await?;
    ensure!(s["nodes"][&victim_id]["health"] == "down", "{:#}", s["nodes"][&victim_id]);
    ensure!(s["nodes"][&other_id]["health"] == "up", "{:#}", s["nodes"][&other_id]);
    Ok(())
}
