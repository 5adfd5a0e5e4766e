//! DNSSEC through geolb: PowerDNS live-signs geolb's answers with the keys of the next backend
//! (lmdb here), and reads a zone's metadata from the *first* backend that answers, which is
//! always the remote one. These tests show what that means and that the `metadata` mirror in
//! geolb's `[[zones]]` config fixes it.

use anyhow::{Result, ensure};
use geolb_tests::stack::{Connector, addresses_of, start_pdns, start_resolver};
use geolb_tests::{Launch, Pdns, QueryOptions, query_with};

const NSEC3PARAM: &str = "1 0 0 -";

/// Signs the lmdb copy of the zone with NSEC3 and restarts PowerDNS so it reads it fresh.
async fn use_nsec3(pdns: &mut Pdns) -> Result<()> {
    pdns.pdnsutil(&["set-nsec3", "example.net.", NSEC3PARAM]).await?;
    pdns.pdnsutil(&["rectify-zone", "example.net."]).await?;
    pdns.restart().await
}

async fn denial_types(pdns: &Pdns) -> Result<Vec<String>> {
    let r = query_with(pdns.addr(), &QueryOptions::new("nope.example.net.", "A").dnssec_ok(true)).await?;
    ensure!(r.rcode == "NXDOMAIN", "nope:\n{r}");
    Ok(r.authority.iter().map(|rr| rr.rtype.clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_metadata_mirrored_in_geolb_keeps_nsec3() -> Result<()> {
    let resolver = start_resolver(&format!("metadata = {{ NSEC3PARAM = [\"{NSEC3PARAM}\"] }}")).await?;
    let mut pdns = start_pdns(&resolver, Launch::RemoteLmdb, true, Connector::Unix).await?;
    use_nsec3(&mut pdns).await?;
    let types = denial_types(&pdns).await?;
    ensure!(types.iter().any(|t| t == "NSEC3") && !types.iter().any(|t| t == "NSEC"), "want NSEC3 denial: {types:?}");
    // geolb's answer is signed with the zone's key, and still the nearest node.
    let london = QueryOptions::new("cdn.example.net.", "A").ecs(Some("81.2.69.0/24".parse()?)).dnssec_ok(true);
    let r = query_with(pdns.addr(), &london).await?;
    ensure!(r.answers_of("RRSIG").len() == 1, "no RRSIG over the geo answer:\n{r}");
    ensure!(addresses_of(&resolver.config, "lhr").contains(&r.addresses()[0]), "London got:\n{r}");
    // While signing, PowerDNS also looks the name up with no client at all (real-remote
    // 0.0.0.0/0). That answer must not be cached and served to clients: alternate two cities.
    for _ in 0..3 {
        for (net, pop) in [("1.129.0.0/24", "syd"), ("81.2.69.0/24", "lhr")] {
            let q = QueryOptions::new("cdn.example.net.", "A").ecs(Some(net.parse()?)).dnssec_ok(true);
            let r = query_with(pdns.addr(), &q).await?;
            ensure!(addresses_of(&resolver.config, pop).contains(&r.addresses()[0]), "{net} got:\n{r}");
            ensure!(r.ecs_scope.is_some_and(|s| s >= 1), "{net}: a geo answer needs a scope:\n{r}");
        }
    }
    Ok(())
}

/// Without the mirror, the zone's NSEC3PARAM (kept in lmdb) is never read: PowerDNS denies with
/// NSEC instead. Kept as a test so a PowerDNS that behaves otherwise is noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mirror_the_next_backends_metadata_is_shadowed() -> Result<()> {
    let resolver = start_resolver("").await?;
    let mut pdns = start_pdns(&resolver, Launch::RemoteLmdb, true, Connector::Unix).await?;
    use_nsec3(&mut pdns).await?;
    let types = denial_types(&pdns).await?;
    ensure!(
        types.iter().any(|t| t == "NSEC") && !types.iter().any(|t| t == "NSEC3"),
        "expected the NSEC fallback: {types:?}"
    );
    Ok(())
}
