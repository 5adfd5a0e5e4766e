//! Writes the seed corpus of `gossip_frame` from real gossip: a member joined with the fuzz
//! cluster key (verdicts, a drain and an override in its state) and a peer on a loopback port
//! that answers it through `GossipEndpoint`. Every message seen either way is framed again by
//! the real sender as from `SOURCE`: whole, in fragments, replayed, and from a mapped address.
//!
//! Run: `cargo run -p geolb-fuzz-targets --example gossip_seeds -- fuzz/corpus/gossip_frame`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a tool: a failure is a message and an exit

use std::net::SocketAddr;
use std::time::Duration;

use chitchat::{ChitchatMessage, Deserializable, Serializable};
use geolb_fuzz_targets::gossip::{KEY, SOURCE, record};
use geolb_member::fuzz::{GossipEndpoint, MAX_DATAGRAM};
use geolb_member::gossip::keys::{Override, OverrideAction, OverrideTarget, Role};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: gossip_seeds OUTPUT_DIR"));
    std::fs::create_dir_all(&out).unwrap();
    let peer_socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer: SocketAddr = peer_socket.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("geolb-gossip-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("cluster.key");
    std::fs::write(&key_file, KEY.iter().map(|b| format!("{b:02x}")).collect::<String>()).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
    let text = std::fs::read_to_string(examples.join("prober-fra.toml"))
        .unwrap()
        .replace(r#"key_file = "cluster.key""#, &format!("key_file = {:?}", key_file.display().to_string()))
        .replace(
            r#"seeds = ["192.0.2.201:7946", "192.0.2.202:7946", "192.0.2.203:7946"]"#,
            &format!("seeds = [\"{peer}\"]"),
        )
        .replace("gossip_interval_ms = 500", "gossip_interval_ms = 50");
    let config = geolb_config::parse(&text, &examples).expect("the edited prober-fra.toml");
    let drains = geolb_member::drains::Drains::load(None);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let member =
        geolb_member::join(&config, Role::Prober, "fuzz-prober", listen, None, "eu".into(), &drains).await.unwrap();
    let now = geolb_member::unix_ms();
    for (node, up) in [("fra-1", true), ("fra-2", false), ("iad-1", true)] {
        let reason = if up { geolb_common::verdict::Reason::Ok } else { geolb_common::verdict::Reason::Status(503) };
        let verdict = geolb_common::verdict::Verdict { up, since_ms: now - 5_000, rtt_us: 1_234, reason };
        member.set_verdict(node, &verdict.encode()).await.unwrap();
    }
    member.set_drain("iad-2", true, now).await.unwrap();
    let o = Override {
        target: OverrideTarget::Pop("iad".into()),
        action: OverrideAction::Drain,
        at_ms: now,
        until_ms: Some(now + 3_600_000),
        by: "admin".into(),
        why: "maintenance, rack 4".into(),
    };
    member.set_override(&o).await.unwrap();

    // The peer's side: answer what the member sends, so it sends each kind of message.
    let mut endpoint = GossipEndpoint::new(KEY, peer, MAX_DATAGRAM).unwrap();
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut round = 0;
    while tokio::time::Instant::now() < deadline && round < 12 {
        let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_millis(200), peer_socket.recv_from(&mut buf)).await
        else {
            continue;
        };
        let Some(message) = endpoint.receive(&buf[..n], from, geolb_member::unix_ms()) else { continue };
        messages.push(message.serialize_to_vec());
        let reply = match round % 3 {
            0 => ChitchatMessage::Syn { cluster_id: "example".into(), digest: Default::default() },
            1 => ChitchatMessage::SynAck { digest: Default::default(), delta: Default::default() },
            _ => ChitchatMessage::Syn { cluster_id: "another-cluster".into(), digest: Default::default() },
        };
        messages.push(reply.serialize_to_vec());
        round += 1;
        for frame in endpoint.send(from, reply).await {
            peer_socket.send_to(&frame, from).await.unwrap();
        }
    }
    messages.push(ChitchatMessage::BadCluster.serialize_to_vec());
    // Two of each kind, the largest first (the member's whole state).
    let decode = |bytes: &[u8]| ChitchatMessage::deserialize(&mut &bytes[..]).unwrap();
    let kind_of = |bytes: &[u8]| match decode(bytes) {
        ChitchatMessage::Syn { .. } => "syn",
        ChitchatMessage::SynAck { .. } => "synack",
        ChitchatMessage::Ack { .. } => "ack",
        ChitchatMessage::BadCluster => "badcluster",
    };
    messages.sort_by_key(|m| std::cmp::Reverse(m.len()));
    messages.dedup();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for m in messages {
        if kept.iter().filter(|k| kind_of(k) == kind_of(&m)).count() < 2 {
            kept.push(m);
        }
    }
    let messages = kept;
    assert!(messages.len() >= 4, "too few messages: {}", messages.len());

    // Framed again as from SOURCE, by the real sender.
    let mut written = 0;
    let mut write = |name: String, input: Vec<u8>| {
        std::fs::write(out.join(name), input).unwrap();
        written += 1;
    };
    for (i, bytes) in messages.iter().enumerate() {
        let kind = kind_of(bytes);
        let mut whole = GossipEndpoint::new(KEY, SOURCE, MAX_DATAGRAM).unwrap();
        let frames = whole.send(SOURCE, decode(bytes)).await;
        let mut input = Vec::new();
        for f in &frames {
            record(0, f, &mut input);
        }
        write(format!("seed-{i:02}-{kind}"), input.clone());
        // Sent twice: the second is a replay.
        let mut twice = input.clone();
        twice.extend_from_slice(&input);
        write(format!("seed-{i:02}-{kind}-replayed"), twice);
        // From the IPv4-mapped address, skewed to the edge of the accepted clock difference.
        let mut mapped = Vec::new();
        for f in &frames {
            record(2 | (1 << 2), f, &mut mapped);
        }
        write(format!("seed-{i:02}-{kind}-mapped-skewed"), mapped);
        // In fragments of at most 200 bytes, the last first.
        let mut small = GossipEndpoint::new(KEY, SOURCE, 200).unwrap();
        let fragments = small.send(SOURCE, decode(bytes)).await;
        if fragments.len() > 1 && fragments.len() <= 8 {
            let mut input = Vec::new();
            for f in fragments.iter().rev() {
                record(0, f, &mut input);
            }
            write(format!("seed-{i:02}-{kind}-fragments"), input);
        }
    }
    println!("{written} inputs from {} messages written to {}", messages.len(), out.display());
    let _ = std::fs::remove_dir_all(&dir);
}
