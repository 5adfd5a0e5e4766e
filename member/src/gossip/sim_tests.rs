//! Simulations over the in-memory network (STYLE.md testing pyramid item 4): convergence,
//! partition and healing, loss, forgeries, task death, and the steady-state byte budget.
//!
//! Time is tokio's paused clock, so bounds are virtual seconds and runs take little wall time.
//! Losses come from the network's seeded generator; chitchat picks gossip peers with its own
//! thread RNG, so runs differ in detail, not in outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::gossip::transport::AuthCounters;

const KEY: [u8; 32] = [7; 32];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 200) as u8, (i % 200) as u8 + 1], 7946))
}

fn config(i: usize, seeds: &[SocketAddr]) -> GossipConfig {
    let mut config = GossipConfig::new(format!("p{i}"), addr(i), "sim", KEY.to_vec(), Role::Prober, "r");
    config.generation = 1;
    config.seeds = seeds.iter().filter(|a| **a != addr(i)).map(ToString::to_string).collect();
    config
}

async fn spawn_cluster(net: &MemNetwork, n: usize) -> Vec<GossipHandle> {
    let seeds: Vec<SocketAddr> = (0..n.min(3)).map(addr).collect();
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(spawn_gossip(config(i, &seeds), net.clone()).await.unwrap());
    }
    handles
}

async fn views(handles: &[GossipHandle]) -> Vec<GossipSnapshot> {
    let mut views = Vec::new();
    for handle in handles {
        views.push(handle.view().await);
    }
    views
}

/// Who each member sees alive, and the verdicts it holds, for failure messages.
fn summary(views: &[GossipSnapshot]) -> Vec<String> {
    views
        .iter()
        .map(|v| {
            v.members
                .iter()
                .map(|m| format!("{}{}{:?}", m.id, if m.live { "+" } else { "-" }, m.verdicts))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Polls every 100 ms of virtual time until `done` holds; returns the virtual time it took.
async fn wait_for(
    handles: &[GossipHandle],
    limit: Duration,
    what: &str,
    done: impl Fn(&[GossipSnapshot]) -> bool,
) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        let views = views(handles).await;
        if done(&views) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}:\n{:#?}", summary(&views));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn verdict<'a>(view: &'a GossipSnapshot, member: usize, node: &str) -> Option<&'a str> {
    view.member(&format!("p{member}"))?.verdicts.get(node).map(String::as_str)
}

fn sees(view: &GossipSnapshot, member: usize, live: bool) -> bool {
    view.member(&format!("p{member}")).is_some_and(|m| m.live == live)
}

/// Every member sees every member live, with its `n<i>` verdict equal to `expected(i)`.
fn converged(views: &[GossipSnapshot], expected: impl Fn(usize) -> String) -> bool {
    views.iter().all(|v| {
        v.members.len() == views.len()
            && (0..views.len()).all(|j| sees(v, j, true) && verdict(v, j, &format!("n{j}")) == Some(&*expected(j)))
    })
}

async fn publish(handles: &[GossipHandle], value: impl Fn(usize) -> String) {
    for (i, handle) in handles.iter().enumerate() {
        handle.set_verdict(&format!("n{i}"), &value(i)).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn five_members_converge_and_follow_changes() {
    let net = MemNetwork::new(1);
    let handles = spawn_cluster(&net, 5).await;
    publish(&handles, |i| format!("U{i}")).await;
    let took = wait_for(&handles, Duration::from_secs(20), "convergence", |v| converged(v, |j| format!("U{j}"))).await;
    eprintln!("5 members converged in {took:?} (virtual)");

    let views = views(&handles).await;
    let p2 = views[0].member("p2").unwrap();
    assert_eq!((p2.role, p2.region.as_deref(), p2.impaired), (Some(Role::Prober), Some("r"), false));
    assert!(p2.heartbeat > 0, "p2's gossip heartbeat reached p0");

    // A change propagates and is signalled on every member's watch.
    let mut watches: Vec<_> = handles.iter().map(GossipHandle::watch).collect();
    assert!(!handles[0].set_verdict("n0", "U0").await.unwrap(), "unchanged: no write");
    assert!(handles[0].set_verdict("n0", "D0").await.unwrap());
    assert!(handles[0].set_impaired(true).await);
    let took = wait_for(&handles, Duration::from_secs(10), "change", |v| {
        converged(v, |j| if j == 0 { "D0".into() } else { format!("U{j}") })
            && v.iter().all(|view| view.member("p0").is_some_and(|m| m.impaired))
    })
    .await;
    eprintln!("a verdict change reached every member in {took:?}");
    for watch in &mut watches {
        assert!(watch.has_changed().unwrap(), "watch not signalled");
    }
    for handle in handles {
        handle.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn partition_is_detected_then_heals() {
    let net = MemNetwork::new(2);
    let handles = spawn_cluster(&net, 5).await;
    publish(&handles, |_| "U".into()).await;
    wait_for(&handles, Duration::from_secs(20), "convergence", |v| converged(v, |_| "U".into())).await;

    let (left, right) = ([0, 1, 2], [3, 4]);
    net.partition(&left.map(addr), &right.map(addr));
    let split = |v: &[GossipSnapshot]| {
        left.iter().all(|&i| right.iter().all(|&j| sees(&v[i], j, false)) && left.iter().all(|&j| sees(&v[i], j, true)))
            && right
                .iter()
                .all(|&i| left.iter().all(|&j| sees(&v[i], j, false)) && right.iter().all(|&j| sees(&v[i], j, true)))
    };
    let detected = wait_for(&handles, Duration::from_secs(30), "partition detection", split).await;
    eprintln!("partition detected on both sides in {detected:?} (interval {DEFAULT_GOSSIP_INTERVAL:?}, phi 8)");
    assert!(detected <= Duration::from_secs(10), "detection took {detected:?}");

    // Each side changes something the other cannot see yet.
    handles[0].set_verdict("n0", "D").await.unwrap();
    handles[3].set_verdict("n3", "D").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let views_now = views(&handles).await;
    assert_eq!(verdict(&views_now[4], 0, "n0"), Some("U"), "the partition must hold");
    assert_eq!(verdict(&views_now[1], 3, "n3"), Some("U"), "the partition must hold");
    assert_eq!(verdict(&views_now[1], 0, "n0"), Some("D"));

    net.heal();
    let expected = |j: usize| if j == 0 || j == 3 { "D".to_owned() } else { "U".to_owned() };
    let healed = wait_for(&handles, Duration::from_secs(30), "healing", |v| converged(v, expected)).await;
    eprintln!("healed and reconverged in {healed:?}");
    for handle in handles {
        handle.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_loss_still_converges() {
    let net = MemNetwork::new(3);
    net.set_loss(0.2);
    let handles = spawn_cluster(&net, 5).await;
    publish(&handles, |i| format!("U{i}")).await;
    let took =
        wait_for(&handles, Duration::from_secs(30), "convergence under loss", |v| converged(v, |j| format!("U{j}")))
            .await;
    publish(&handles, |i| format!("D{i}")).await;
    let again =
        wait_for(&handles, Duration::from_secs(30), "change under loss", |v| converged(v, |j| format!("D{j}"))).await;
    let total = net.total();
    eprintln!(
        "20% loss: converged in {took:?}, change in {again:?}; lost {} of {} datagrams",
        total.dropped_datagrams, total.sent_datagrams
    );
    assert!(total.dropped_datagrams * 10 > total.sent_datagrams, "loss was not applied");
    for handle in handles {
        handle.shutdown().await.unwrap();
    }
}

/// A member holding the wrong key impersonates p1 (same id, newer generation) and says every
/// node is down; captured frames are replayed and re-sent from the wrong source. Nothing changes.
#[tokio::test(start_paused = true)]
async fn forgeries_change_nothing_and_are_counted() {
    let net = MemNetwork::new(4);
    let mut tap = net.tap();
    let handles = spawn_cluster(&net, 3).await;
    publish(&handles, |_| "U".into()).await;
    wait_for(&handles, Duration::from_secs(20), "convergence", |v| converged(v, |_| "U".into())).await;
    let before = views(&handles).await;

    let mut rogue = config(1, &[addr(0), addr(2)]);
    rogue.key = vec![8; 32];
    rogue.generation = 2;
    rogue.listen = addr(99);
    rogue.advertise = addr(99);
    let rogue = spawn_gossip(rogue, net.clone()).await.unwrap();
    for node in 0..3 {
        rogue.set_verdict(&format!("n{node}"), "D").await.unwrap();
    }
    let mut captured = Vec::new();
    while let Ok(datagram) = tap.try_recv() {
        captured.push(datagram);
    }
    assert!(!captured.is_empty());
    for datagram in &captured {
        net.inject(datagram.from, datagram.to, datagram.bytes.clone());
        net.inject(addr(99), datagram.to, datagram.bytes.clone());
    }
    tokio::time::sleep(Duration::from_secs(10)).await;

    let after = views(&handles).await;
    for (b, a) in before.iter().zip(&after) {
        for member in &a.members {
            let old = b.member(&member.id).unwrap();
            assert_eq!((member.generation, &member.verdicts), (old.generation, &old.verdicts), "{}", member.id);
        }
        assert_eq!(a.members.len(), 3);
    }
    let mut total = AuthCounters::default();
    for handle in &handles {
        let c = handle.stats().snapshot();
        total.bad_tag += c.bad_tag;
        total.replay += c.replay;
        total.spoofed_sender += c.spoofed_sender;
        total.stale += c.stale;
        total.accepted += c.accepted;
    }
    eprintln!("forgeries: {total:?}");
    assert!(total.bad_tag > 0 && total.replay > 0 && total.spoofed_sender > 0, "{total:?}");
    assert_eq!(total.stale, 0);
    assert_eq!(rogue.stats().snapshot().accepted, 0, "the members' replies must not verify for the rogue");
    // The cluster still gossips.
    handles[2].set_verdict("n2", "D").await.unwrap();
    wait_for(&handles, Duration::from_secs(10), "gossip after forgeries", |v| {
        converged(v, |j| if j == 2 { "D".into() } else { "U".into() })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn termination_reports_a_dead_task_and_a_clean_shutdown() {
    let net = MemNetwork::new(5);
    let handles = spawn_cluster(&net, 2).await;
    let mut handles = handles.into_iter();
    let (first, second) = (handles.next().unwrap(), handles.next().unwrap());
    let dead = first.termination();
    net.close(addr(0));
    let err = tokio::time::timeout(Duration::from_secs(5), dead).await.expect("not reported").unwrap_err();
    assert!(err.to_string().contains("10.0.0.1:7946"), "{err}");
    let clean = second.termination();
    second.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), clean).await.expect("not reported").unwrap();
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn handle_refuses_bad_values_and_configs() {
    let net = MemNetwork::new(6);
    let handle = spawn_gossip(config(0, &[]), net.clone()).await.unwrap();
    assert!(matches!(handle.set_verdict("n1", &"x".repeat(65)).await, Err(GossipError::Schema(_))));
    assert!(matches!(handle.set_drain("", true, 1).await, Err(GossipError::Schema(_))));
    assert!(handle.set_drain("n1", true, 5).await.unwrap());
    assert_eq!(handle.view().await.drains.get("n1"), Some(&(5, true)));
    assert!(handle.set_verdict("n1", "U").await.unwrap());
    let watch = handle.watch();
    assert!(handle.remove_verdict("n1").await);
    assert!(watch.has_changed().unwrap(), "a deletion must be signalled");
    assert!(handle.view().await.members[0].verdicts.is_empty());

    let err = spawn_gossip(config(0, &[]), net.clone()).await.unwrap_err();
    assert!(matches!(&err, GossipError::Bind { addr: a, .. } if *a == addr(0)), "{err}");
    assert!(err.to_string().contains("10.0.0.1:7946"), "{err}");
    let mut bad = config(1, &[]);
    bad.key = vec![1; 16];
    assert!(matches!(spawn_gossip(bad, net.clone()).await, Err(GossipError::Key(KeyTooShort { len: 16 }))));
    let mut bad = config(1, &[]);
    bad.advertise = "0.0.0.0:7946".parse().unwrap();
    assert!(matches!(spawn_gossip(bad, net.clone()).await, Err(GossipError::Config(_))));
    let mut bad = config(1, &[]);
    bad.gossip_interval = Duration::ZERO;
    assert!(matches!(spawn_gossip(bad, net.clone()).await, Err(GossipError::Config(_))));
    let mut bad = config(1, &[]);
    bad.region = String::new();
    assert!(matches!(spawn_gossip(bad, net.clone()).await, Err(GossipError::Schema(_))));

    // Port 0 binds a free port and advertises it.
    let mut zero = config(2, &[]);
    zero.listen.set_port(0);
    zero.advertise.set_port(0);
    let zero = spawn_gossip(zero, net).await.unwrap();
    assert_ne!(zero.advertise_addr().port(), 0);
    assert_eq!(zero.advertise_addr(), zero.listen_addr());
    assert_eq!(zero.view().await.members[0].gossip_addr, zero.advertise_addr());
}

/// A full sync whose messages do not fit one datagram goes through fragments, under loss.
#[tokio::test(start_paused = true)]
async fn large_messages_sync_through_fragments() {
    const MAX: usize = 9_000;
    let net = MemNetwork::new(8);
    net.set_mtu(MAX);
    net.set_loss(0.05);
    let mut handles = Vec::new();
    for i in 0..3 {
        let seeds = [addr(0)];
        handles.push(spawn_with_datagram_bound(config(i, &seeds), net.clone(), MAX).await.unwrap());
    }
    for (i, handle) in handles.iter().enumerate() {
        // All at once, and poorly compressible, so the first deltas are large.
        handle
            .chitchat
            .with_chitchat(|c| {
                for node in 0..1_500u64 {
                    let encoded: String = (0..16u64)
                        .map(|k| {
                            let x = (node * 16 + k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64) << 7;
                            format!("{:04x}", (x >> 40) & 0xffff)
                        })
                        .collect();
                    keys::write_verdict(c.self_node_state(), &format!("node-{node:04}"), &encoded).unwrap();
                }
            })
            .await;
    }
    publish(&handles, |i| format!("U{i}")).await;
    wait_for(&handles, Duration::from_secs(60), "fragmented sync", |v| {
        converged(v, |j| format!("U{j}")) && v.iter().all(|view| view.members.iter().all(|m| m.verdicts.len() == 1_501))
    })
    .await;
    let mut total = AuthCounters::default();
    for handle in &handles {
        let c = handle.stats().snapshot();
        total.fragmented_sent += c.fragmented_sent;
        total.unsendable += c.unsendable;
        total.send_errors += c.send_errors;
        total.largest_message = total.largest_message.max(c.largest_message);
        total.reassembly_dropped += c.reassembly_dropped;
    }
    eprintln!("fragmented sync: {total:?}");
    assert!(total.fragmented_sent > 0 && total.largest_message > MAX as u64, "{total:?}");
    assert_eq!((total.unsendable, total.send_errors), (0, 0), "{total:?}");
}

/// STYLE.md's budget test: 16 probers × 2000 `v:` keys, steady state after convergence, no
/// verdict changing (freshness rides on chitchat's heartbeat in the digests, not on a key).
#[tokio::test(start_paused = true)]
async fn steady_state_bytes_per_member_stay_under_budget() {
    const MEMBERS: usize = 16;
    const NODES: usize = 2_000;
    const BUDGET_BYTES_PER_SEC: u64 = 20_000;
    let net = MemNetwork::new(7);
    let handles = Arc::new(spawn_cluster(&net, MEMBERS).await);
    for (i, handle) in handles.iter().enumerate() {
        handle
            .chitchat
            .with_chitchat(|c| {
                for node in 0..NODES {
                    let encoded = format!("U|{}|1790000{:06}", 10 + (node + i) % 90, node);
                    keys::write_verdict(c.self_node_state(), &format!("node-{node:04}"), &encoded).unwrap();
                }
            })
            .await;
    }
    let start = tokio::time::Instant::now();
    loop {
        let mut complete = true;
        for handle in handles.iter() {
            let (live, keys) = handle
                .chitchat
                .with_chitchat(|c| {
                    (c.live_nodes().count(), c.node_states().values().map(NodeState::num_key_values).sum::<usize>())
                })
                .await;
            complete &= live == MEMBERS && keys >= MEMBERS * (NODES + 3);
        }
        if complete {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no convergence within 120 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let converged_in = start.elapsed();
    let sync = net.total();

    tokio::time::sleep(Duration::from_secs(4)).await;
    const WINDOW: Duration = Duration::from_secs(16);
    let before: Vec<_> = (0..MEMBERS).map(|i| net.counters(addr(i))).collect();
    tokio::time::sleep(WINDOW).await;
    let after: Vec<_> = (0..MEMBERS).map(|i| net.counters(addr(i))).collect();

    let secs = WINDOW.as_secs();
    let sent: Vec<u64> = before.iter().zip(&after).map(|(b, a)| (a.sent_bytes - b.sent_bytes) / secs).collect();
    let received: Vec<u64> =
        before.iter().zip(&after).map(|(b, a)| (a.delivered_bytes - b.delivered_bytes) / secs).collect();
    let datagrams: u64 = before.iter().zip(&after).map(|(b, a)| a.sent_datagrams - b.sent_datagrams).sum();
    let avg_sent = sent.iter().sum::<u64>() / MEMBERS as u64;
    let max_sent = sent.iter().copied().max().unwrap_or(0);
    let max_received = received.iter().copied().max().unwrap_or(0);
    let mut largest = 0;
    let mut fragmented = 0;
    let mut rejected = 0;
    for handle in handles.iter() {
        let c = handle.stats().snapshot();
        largest = largest.max(c.largest_message);
        fragmented += c.fragmented_sent;
        rejected += c.rejected_total();
    }
    let per_member: BTreeMap<String, (u64, u64)> =
        (0..MEMBERS).map(|i| (format!("p{i}"), (sent[i], received[i]))).collect();
    eprintln!(
        "budget: {MEMBERS} members x {NODES} keys converged in {converged_in:?} (virtual) after {} bytes in {} datagrams; \
         steady state per member: sent avg {avg_sent} B/s, max {max_sent} B/s, received max {max_received} B/s, \
         {:.1} datagrams/s/member; largest message {largest} B, fragmented messages {fragmented}, rejected {rejected}; \
         (sent, received) B/s per member: {per_member:?}",
        sync.sent_bytes,
        sync.sent_datagrams,
        datagrams as f64 / (MEMBERS as f64 * secs as f64),
    );
    assert!(max_sent < BUDGET_BYTES_PER_SEC, "max sent {max_sent} B/s");
    assert!(max_received < BUDGET_BYTES_PER_SEC, "max received {max_received} B/s");
    assert_eq!(rejected, 0);
}
