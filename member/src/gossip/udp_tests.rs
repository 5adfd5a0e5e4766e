//! Real UDP on 127.0.0.1: three members converge; a member holding the wrong key that claims a
//! node is down changes nothing and is counted; bind errors carry their address.

use super::*;
use crate::gossip::transport::UdpDatagrams;

const KEY: [u8; 32] = [7; 32];

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(id: &str, key: &[u8], seeds: &[SocketAddr]) -> GossipConfig {
    let mut config = GossipConfig::new(id, localhost(), "udp-test", key.to_vec(), Role::Prober, "lo");
    config.gossip_interval = Duration::from_millis(100);
    config.seeds = seeds.iter().map(ToString::to_string).collect();
    config
}

/// Polls until `done` holds for every handle's view, for at most 10 s of real time.
async fn wait_for(handles: &[&GossipHandle], what: &str, done: impl Fn(&GossipSnapshot) -> bool) {
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut all = true;
            for handle in handles {
                all &= done(&handle.view().await);
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "{what}: not within 10 s");
}

fn has(view: &GossipSnapshot, member: &str, node: &str, value: &str) -> bool {
    view.member(member).is_some_and(|m| m.live && m.verdicts.get(node).map(String::as_str) == Some(value))
}

#[tokio::test]
async fn three_members_converge_and_a_forged_down_changes_nothing() {
    let first = spawn_gossip(config("p0", &KEY, &[]), UdpDatagrams).await.unwrap();
    let seed = first.advertise_addr();
    let second = spawn_gossip(config("p1", &KEY, &[seed]), UdpDatagrams).await.unwrap();
    let third = spawn_gossip(config("p2", &KEY, &[seed]), UdpDatagrams).await.unwrap();
    let members = [&first, &second, &third];
    for (i, member) in members.iter().enumerate() {
        member.set_verdict("n1", &format!("U{i}")).await.unwrap();
    }
    wait_for(&members, "convergence", |v| {
        v.members.len() == 3 && (0..3).all(|i| has(v, &format!("p{i}"), "n1", &format!("U{i}")))
    })
    .await;

    // The forger runs real chitchat with a wrong key, impersonates p1 (same id, newer
    // generation) and says n1 is down. Its messages are well-formed chitchat; only the tag is off.
    let mut forged = config("p1", &[9; 32], &[seed, second.advertise_addr(), third.advertise_addr()]);
    forged.generation = second.generation() + 1;
    let forger = spawn_gossip(forged, UdpDatagrams).await.unwrap();
    forger.set_verdict("n1", "D").await.unwrap();
    let bad_tags = || members.iter().map(|m| m.stats().snapshot().bad_tag).sum::<u64>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bad_tags() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "forged datagrams were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for member in &members {
        let view = member.view().await;
        let p1 = view.member("p1").unwrap();
        assert_eq!((p1.generation, p1.verdicts["n1"].as_str()), (second.generation(), "U1"));
        assert_eq!(view.members.len(), 3);
        let c = member.stats().snapshot();
        assert!(c.accepted > 0 && c.bytes_received > 0 && c.bytes_sent > 0, "{c:?}");
        assert_eq!(c.spoofed_sender + c.replay + c.stale + c.malformed, 0, "{c:?}");
    }
    assert_eq!(forger.stats().snapshot().accepted, 0);
    eprintln!("bad tags counted: {}", bad_tags());

    // Gossip goes on.
    third.set_verdict("n1", "D2").await.unwrap();
    wait_for(&members, "change after the forgery", |v| has(v, "p2", "n1", "D2")).await;
    for handle in [first, second, third, forger] {
        let terminated = handle.termination();
        handle.shutdown().await.unwrap();
        terminated.await.unwrap();
    }
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let taken = std::net::UdpSocket::bind(localhost()).unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = config("p0", &KEY, &[]);
    config.listen = addr;
    config.advertise = addr;
    let err = spawn_gossip(config, UdpDatagrams).await.unwrap_err();
    assert!(matches!(&err, GossipError::Bind { addr: a, .. } if *a == addr), "{err}");
    assert!(err.to_string().starts_with(&format!("failed to bind gossip socket {addr}: ")), "{err}");
}
