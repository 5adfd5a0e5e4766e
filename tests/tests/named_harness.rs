//! Self-tests of the zone-transfer harness: BIND's `named` as the hidden primary of example.net
//! (AXFR with and without TSIG, IXFR from its journal, NOTIFY after a change, stop and start),
//! PowerDNS (lmdb) as its signed secondary following NOTIFYs, and `delv` validating PowerDNS's
//! signed answers against the zone's own key — and failing with another key.
//!
//! Like the other end-to-end tests these need the packages of `scripts/setup.sh` (here bind9,
//! bind9-dnsutils and PowerDNS with lmdb), and root: `named` listens only on interface
//! addresses, so the harness adds its loopback address to `lo`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use domain::base::Message;
use domain::base::iana::{Opcode, Rtype};
use geolb_tests::{
    Denial, Launch, Named, NamedOptions, Pdns, PdnsOptions, QueryOptions, TsigKey, delv, query_with, unique_loopback,
    workspace_root,
};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep, timeout};

const ORIGIN: &str = "example.net.";

/// Every test here finishes within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn example_zone_path() -> PathBuf {
    workspace_root().join("config/examples/example.net.zone")
}

fn example_zone() -> Result<String> {
    let path = example_zone_path();
    std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))
}

/// The example zone with serial `serial` and one more record, `extra`.
fn changed_zone(base: &str, serial: u32, extra: &str) -> Result<String> {
    ensure!(base.contains("2026112301"), "the example zone's serial changed; update this test");
    Ok(format!("{}\n{extra}\n", base.replace("2026112301", &serial.to_string())))
}

async fn bounded<T>(test: impl Future<Output = Result<T>>) -> Result<T> {
    timeout(TEST_TIMEOUT, test).await.with_context(|| format!("test did not finish within {TEST_TIMEOUT:?}"))?
}

/// Waits for a NOTIFY for `origin` on `socket`; returns whether it was TSIG-signed.
async fn wait_notify(socket: &UdpSocket, origin: &str, within: Duration) -> Result<bool> {
    let mut buf = vec![0; 65535];
    let deadline = Instant::now() + within;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .with_context(|| format!("no NOTIFY on {:?} within {within:?}", socket.local_addr()))??;
        let Ok(message) = Message::from_octets(&buf[..n]) else { continue };
        if message.header().opcode() != Opcode::NOTIFY {
            continue;
        }
        let question = message.sole_question().with_context(|| format!("NOTIFY from {from} without a question"))?;
        ensure!(
            question.qname().to_string().eq_ignore_ascii_case(origin.trim_end_matches('.')),
            "NOTIFY for {question}"
        );
        let signed = message.additional()?.any(|rr| rr.is_ok_and(|rr| rr.rtype() == Rtype::TSIG));
        return Ok(signed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_transfers_notifies_and_restarts() -> Result<()> {
    bounded(async {
        let zone = example_zone()?;
        let key = TsigKey::generate("geolb-xfr")?;
        // A NOTIFY target; with a key set, named signs its NOTIFYs.
        let listener = UdpSocket::bind(SocketAddr::new(unique_loopback().into(), 5354)).await?;
        let mut named =
            Named::start(NamedOptions::new(ORIGIN, zone.clone()).tsig(key.clone()).also_notify(listener.local_addr()?))
                .await?;
        ensure!(named.serial().await? == 2026112301);
        // named notifies once it loaded the zone.
        ensure!(wait_notify(&listener, ORIGIN, Duration::from_secs(5)).await?, "the NOTIFY was not signed");

        // AXFR with the key; refused without it (only the key may transfer).
        let axfr = named.transfer("AXFR", Some(&key)).await?;
        let soa_at_both_ends =
            axfr.first().is_some_and(|rr| rr.rtype == "SOA") && axfr.last().is_some_and(|rr| rr.rtype == "SOA");
        ensure!(soa_at_both_ends, "AXFR:\n{axfr:?}");
        ensure!(axfr.iter().any(|rr| rr.name == "static.example.net." && rr.data == "192.0.2.80"), "{axfr:?}");
        let unsigned = named.transfer("AXFR", None).await;
        ensure!(unsigned.is_err(), "an unsigned AXFR was allowed: {unsigned:?}");
        let dig = named.dig(&[ORIGIN, "AXFR"]).await?;
        ensure!(dig.contains("Transfer failed"), "unsigned AXFR:\n{dig}");

        // A change: the new serial is served, a NOTIFY goes out, IXFR is incremental.
        let started = Instant::now();
        let serial = named.set_zone(&changed_zone(&zone, 2026112302, "new IN A 192.0.2.99")?).await?;
        let reload = started.elapsed();
        ensure!(serial == 2026112302 && named.serial().await? == serial);
        ensure!(wait_notify(&listener, ORIGIN, Duration::from_secs(5)).await?, "the NOTIFY was not signed");
        eprintln!(
            "named served the new serial {reload:?} after set_zone started; NOTIFY after {:?}",
            started.elapsed()
        );
        let ixfr = named.transfer("IXFR=2026112301", Some(&key)).await?;
        ensure!(ixfr.len() >= 4, "IXFR:\n{ixfr:?}");
        ensure!(ixfr[0].rtype == "SOA" && ixfr[0].data.contains(" 2026112302 "), "IXFR:\n{ixfr:?}");
        ensure!(ixfr[1].rtype == "SOA" && ixfr[1].data.contains(" 2026112301 "), "not incremental:\n{ixfr:?}");
        ensure!(ixfr.iter().any(|rr| rr.name == "new.example.net." && rr.data == "192.0.2.99"), "IXFR:\n{ixfr:?}");
        // Nothing of the unchanged records: an AXFR-style answer would have the NS.
        ensure!(!ixfr.iter().any(|rr| rr.rtype == "NS"), "IXFR:\n{ixfr:?}");

        // Stop and start again: same address, same zone, journal kept.
        let addr = named.addr();
        named.stop()?;
        ensure!(named.serial().await.is_err(), "named still answers after stop");
        named.start_again().await?;
        ensure!(named.addr() == addr && named.serial().await? == 2026112302);
        let ixfr = named.transfer("IXFR=2026112301", Some(&key)).await?;
        ensure!(ixfr.get(1).is_some_and(|rr| rr.data.contains(" 2026112301 ")), "IXFR after restart:\n{ixfr:?}");
        Ok(())
    })
    .await
}

/// PowerDNS (lmdb, signed) as the secondary of `named`: it transfers at start, follows a
/// NOTIFY, and its live-signed answers validate against its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdns_secondary_follows_named_notify() -> Result<()> {
    bounded(async {
        let zone = example_zone()?;
        let pdns_ip = unique_loopback();
        let pdns_addr = SocketAddr::new(pdns_ip.into(), geolb_tests::PDNS_PORT);
        let mut named = Named::start(
            NamedOptions::new(ORIGIN, zone.clone()).also_notify(pdns_addr).allow_transfer_ip(pdns_ip.into()),
        )
        .await?;
        let mut options = PdnsOptions::new(Launch::Lmdb).secondary_zone(ORIGIN, named.addr()).dnssec(true);
        options.address = Some(pdns_ip.into());
        let pdns = Pdns::start(options).await?;
        let soa = pdns.query(ORIGIN, "SOA", None).await?;
        ensure!(soa.aa && soa.answers_of("SOA")[0].data.contains(" 2026112301 "), "SOA:\n{soa}");
        let show = pdns.pdnsutil(&["show-zone", ORIGIN]).await?;
        ensure!(show.contains("This is a Slave zone") || show.contains("secondary"), "show-zone:\n{show}");

        let started = Instant::now();
        named.set_zone(&changed_zone(&zone, 2026112302, "new IN A 192.0.2.99")?).await?;
        let probe = QueryOptions::new("new.example.net.", "A").timeout(Duration::from_millis(250)).attempts(1);
        let followed = loop {
            if let Ok(r) = query_with(pdns.addr(), &probe).await
                && r.addresses() == [std::net::IpAddr::from([192, 0, 2, 99])]
            {
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(15) {
                bail!("pdns did not serve new.example.net within 15 s of set_zone; pdns log:\n{}", pdns.log());
            }
            sleep(Duration::from_millis(20)).await;
        };
        eprintln!("pdns served the new record {followed:?} after set_zone started");
        ensure!(pdns.log().contains("Received NOTIFY for example.net"), "no NOTIFY in the pdns log:\n{}", pdns.log());

        let anchor = pdns.trust_anchor(ORIGIN).await?;
        let v = delv(pdns.addr(), ORIGIN, &anchor, "new.example.net.", "A").await?;
        ensure!(!v.negative && v.data("A") == ["192.0.2.99"], "delv:\n{v}");
        Ok(())
    })
    .await
}

/// `delv` against a signed lmdb PowerDNS: positive, NODATA and NXDOMAIN answers validate with
/// the zone's key; nothing validates with another zone's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delv_validates_signed_pdns_answers() -> Result<()> {
    bounded(async {
        let pdns = Pdns::start(PdnsOptions::new(Launch::Lmdb).zone(ORIGIN, example_zone_path()).dnssec(true)).await?;
        let anchor = pdns.trust_anchor(ORIGIN).await?;
        ensure!(anchor.starts_with("example.net") && anchor.contains(" DNSKEY 257 3 13 "), "anchor: {anchor}");

        let v = delv(pdns.addr(), ORIGIN, &anchor, "static.example.net.", "A").await?;
        ensure!(!v.negative && v.denial.is_none() && v.data("A") == ["192.0.2.80"], "positive:\n{v}");
        ensure!(v.records.iter().any(|r| r.contains(" RRSIG A ")), "positive without RRSIG:\n{v}");

        let v = delv(pdns.addr(), ORIGIN, &anchor, "static.example.net.", "TXT").await?;
        ensure!(v.negative && v.denial == Some(Denial::NoData), "NODATA:\n{v}");

        let v = delv(pdns.addr(), ORIGIN, &anchor, "nope.example.net.", "A").await?;
        ensure!(v.negative && v.denial == Some(Denial::NxDomain), "NXDOMAIN:\n{v}");

        // Another server's key (a second signed PowerDNS has its own) must not validate.
        let other = Pdns::start(PdnsOptions::new(Launch::Lmdb).zone(ORIGIN, example_zone_path()).dnssec(true)).await?;
        let wrong = other.trust_anchor(ORIGIN).await?;
        ensure!(wrong != anchor, "two servers generated the same key");
        for (qname, qtype) in [("static.example.net.", "A"), ("nope.example.net.", "A")] {
            let result = delv(pdns.addr(), ORIGIN, &wrong, qname, qtype).await;
            ensure!(result.is_err(), "{qname} {qtype} validated with the wrong key: {result:?}");
        }
        // An unsigned server: delv says "unsigned answer", an error too.
        let unsigned = Pdns::start(PdnsOptions::new(Launch::Lmdb).zone(ORIGIN, example_zone_path())).await?;
        let result = delv(unsigned.addr(), ORIGIN, &anchor, "static.example.net.", "A").await;
        ensure!(result.is_err(), "an unsigned answer validated: {result:?}");
        Ok(())
    })
    .await
}

/// A primary that refuses the transfer: [`Pdns::start`] fails within its timeout, saying which
/// zone it waited for and quoting the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdns_secondary_start_fails_when_the_transfer_is_refused() -> Result<()> {
    bounded(async {
        let named = Named::start(NamedOptions::new(ORIGIN, example_zone()?)).await?;
        let mut options = PdnsOptions::new(Launch::Lmdb).secondary_zone(ORIGIN, named.addr());
        options.startup_timeout = Duration::from_secs(3);
        let Err(error) = Pdns::start(options).await else { bail!("pdns started without its secondary zone") };
        let error = format!("{error:#}");
        eprintln!("{error}");
        ensure!(error.contains("did not answer SOA example.net."), "{error}");
        ensure!(error.contains("hint: a secondary zone's transfer failed"), "{error}");
        Ok(())
    })
    .await
}

/// With a TSIG key on both sides and no transfer by address: PowerDNS signs its AXFR request
/// and accepts `named`'s signed NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdns_secondary_with_tsig() -> Result<()> {
    bounded(async {
        let zone = example_zone()?;
        let key = TsigKey::generate("geolb-xfr")?;
        let pdns_ip = unique_loopback();
        let pdns_addr = SocketAddr::new(pdns_ip.into(), geolb_tests::PDNS_PORT);
        let mut named =
            Named::start(NamedOptions::new(ORIGIN, zone.clone()).tsig(key.clone()).also_notify(pdns_addr)).await?;
        let mut options = PdnsOptions::new(Launch::Lmdb).secondary_zone(ORIGIN, named.addr()).tsig_key(key);
        options.address = Some(pdns_ip.into());
        let pdns = Pdns::start(options).await?;
        ensure!(named.log().contains("/key geolb-xfr"), "the AXFR was not signed:\n{}", named.log());

        named.set_zone(&changed_zone(&zone, 2026112302, "new IN A 192.0.2.99")?).await?;
        let probe = QueryOptions::new("new.example.net.", "A").timeout(Duration::from_millis(250)).attempts(1);
        let started = Instant::now();
        while !query_with(pdns.addr(), &probe).await.is_ok_and(|r| !r.addresses().is_empty()) {
            if started.elapsed() > Duration::from_secs(15) {
                bail!("pdns did not follow the signed NOTIFY within 15 s; pdns log:\n{}", pdns.log());
            }
            sleep(Duration::from_millis(20)).await;
        }
        let log = pdns.log();
        ensure!(log.contains("Received NOTIFY for example.net") && !log.contains("denied"), "pdns log:\n{log}");
        Ok(())
    })
    .await
}
