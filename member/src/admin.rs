//! The admin HTTP API every member serves (loopback by default): `/healthz`, `/readyz` (a prober
//! can vote, so the health view is current),
//! `GET /api/v1/state` (nodes × probers × verdicts with reasons and ages, the quorum decision of
//! each node, fenced and impaired probers) and `POST /api/v1/nodes/{id}/drain` / `undrain`
//! (bearer token from `[admin] token_file`; without one the write endpoints answer 403).
//!
//! A drain is written into this member's gossip state and so reaches every member; each member
//! also saves its own drains (see [`crate::drains`]) and publishes them again after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::cluster::ClusterHealth;
use crate::drains::Drains;
use crate::fleet::api::ApiError;
use crate::gossip::GossipHandle;

/// What the admin API reads and writes.
#[derive(Clone)]
pub struct AdminState {
    /// This member's gossip.
    pub gossip: Arc<GossipHandle>,
    /// The current config (node list, quorum parameters, admin token).
    pub config: Arc<arc_swap::ArcSwap<geolb_config::Config>>,
    /// The member's current fold, kept up to date by its `cluster::Follower` (the resolver's
    /// observer, the prober's `follow_cluster`); the state API shows it.
    pub health: Arc<std::sync::Mutex<ClusterHealth>>,
    /// This member's saved drains.
    pub drains: Arc<Drains>,
    /// Serializes drain changes, so the saved file and the gossip always agree.
    pub drain_lock: Arc<tokio::sync::Mutex<()>>,
    /// Renders this program's metrics for `GET /metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Where the config comes from: the fleet document's versions, for `/api/v1/config`.
    pub source: Arc<crate::fleet::ConfigSource>,
    /// What the program adds to `/api/v1/state` and `/readyz` (the resolver's zones), if anything.
    pub extension: Option<Arc<dyn AdminExtension>>,
}

/// What a program adds to the admin API beyond the cluster's state.
pub trait AdminExtension: Send + Sync {
    /// Top-level fields added to `GET /api/v1/state`.
    fn state(&self) -> serde_json::Map<String, serde_json::Value>;
    /// Problems `/readyz` names after its own line: `(fatal, why)`; a fatal one answers 503.
    fn readiness(&self) -> Vec<(bool, String)>;
}

/// Time the admin API gets to finish its requests at shutdown.
const ADMIN_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves the admin API on `listener` until `shutdown`, then for at most a few seconds more:
/// a stuck client never holds the process.
///
/// Connections are bounded by `[admin]`'s limits, read at each accept (a reload changes them
/// for the connections accepted after it): see [`crate::listener`]. A request body that does
/// not arrive within `header_timeout_ms` is answered 408. `metrics` are the listener's
/// ([`crate::listener::ConnectionMetrics::register`] with `admin`).
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AdminState,
    metrics: crate::listener::ConnectionMetrics,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("admin listening on http://{addr}/");
    }
    let config = state.config.clone();
    let admin = crate::listener::Listener {
        name: "admin",
        limits: Arc::new(move || config.load().admin.limits),
        metrics: metrics.clone(),
        shutdown_grace: ADMIN_SHUTDOWN_GRACE,
    };
    let service = hyper_util::service::TowerToHyperService::new(router(state));
    let make_service = move |limits: geolb_config::ConnectionLimits| {
        let (service, metrics) = (service.clone(), metrics.clone());
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (parts, body) = request.into_parts();
            let body = crate::listener::DeadlineBody::new(body, limits.header_timeout);
            let expired = body.expired();
            let answer = hyper::service::Service::call(&service, hyper::Request::from_parts(parts, body));
            let metrics = metrics.clone();
            async move {
                let response = answer.await?;
                if expired.load(std::sync::atomic::Ordering::Relaxed) {
                    metrics.count(crate::listener::Refusal::BodyTimeout);
                    return Ok(crate::listener::body_timeout_response(limits.header_timeout));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    crate::listener::serve(listener, admin, make_service, shutdown).await;
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(get_readyz))
        .route("/api/v1/state", get(get_state))
        .route("/metrics", get(get_metrics))
        .route("/api/v1/nodes/{id}/drain", post(drain))
        .route("/api/v1/nodes/{id}/undrain", post(undrain))
        .route("/api/v1/overrides", get(get_overrides).post(post_override))
        .route(
            "/api/v1/config",
            get(crate::fleet::api::get_config)
                .put(crate::fleet::api::put_config)
                .patch(crate::fleet::api::patch_config),
        )
        .route("/api/v1/config/history", get(crate::fleet::api::get_history))
        .route("/api/v1/config/versions/{version}", get(crate::fleet::api::get_version))
        .layer(axum::extract::DefaultBodyLimit::max(crate::fleet::MAX_DOCUMENT_BYTES))
        .with_state(state)
}

#[derive(Serialize)]
struct StateDoc {
    now_ms: u64,
    /// This member's gossip traffic and rejected datagrams since it started.
    gossip: crate::gossip::transport::AuthCounters,
    /// This member's fleet document: where it comes from, the newest version held, the one
    /// applied, and the last one it refused.
    config: ConfigDoc,
    members: Vec<MemberDoc>,
    nodes: BTreeMap<String, NodeDoc>,
    fenced: Vec<String>,
    /// Operators' overrides in force.
    overrides: Vec<crate::gossip::keys::Override>,
    /// The program's own fields ([`AdminExtension::state`]).
    #[serde(flatten)]
    extension: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct ConfigDoc {
    store: &'static str,
    head: Option<VersionDoc>,
    applied: Option<VersionDoc>,
    refused: Option<crate::fleet::Refusal>,
    /// Every member with the same applied version and hash as this one.
    in_step: bool,
    /// The `postgres` store's database: reachable or since when not.
    database: Option<crate::fleet::DatabaseStatus>,
}

#[derive(Serialize, Clone, PartialEq)]
struct VersionDoc {
    version: u64,
    hash: String,
}

impl From<crate::gossip::keys::ConfigVersion> for VersionDoc {
    fn from(v: crate::gossip::keys::ConfigVersion) -> VersionDoc {
        VersionDoc { version: v.version, hash: v.hash }
    }
}

#[derive(Serialize)]
struct MemberDoc {
    id: String,
    role: Option<&'static str>,
    region: Option<String>,
    live: bool,
    impaired: bool,
    heartbeat_age_ms: Option<u64>,
    disagreement: Option<f64>,
    /// The fleet document versions it holds and has applied (`None` until it says).
    config_head: Option<VersionDoc>,
    config_applied: Option<VersionDoc>,
}

#[derive(Serialize)]
struct NodeDoc {
    health: geolb_common::Health,
    reason: &'static str,
    since_ms: u64,
    down_voters: usize,
    eligible_voters: usize,
    drained: bool,
    regional: BTreeMap<String, geolb_common::Health>,
    probers: BTreeMap<String, VerdictDoc>,
}

#[derive(Serialize)]
struct VerdictDoc {
    up: Option<bool>,
    reason: String,
    since_ms: Option<u64>,
    age_ms: Option<u64>,
    rtt_us: Option<u32>,
}

/// Ready when this member's health view is current: at least one prober may vote (live, not
/// impaired, heard from within `stale_after_ms`). Without one, a resolver's answers rest on the
/// last verdicts held for the grace period and then on failing open: an anycast node would
/// rather withdraw.
async fn get_readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    let params = crate::cluster::params(&state.config.load());
    let now = crate::unix_ms();
    let (eligible, total) = {
        let health = state.health.lock().unwrap_or_else(|p| p.into_inner());
        (health.voters.iter().filter(|v| v.may_vote(now, &params)).count(), health.voters.len())
    };
    // Not a reason to withdraw: the member serves its last applied version meanwhile.
    let database = match state.source.database() {
        Some(db) if !db.up => {
            let applied = state.source.applied_version().map_or(0, |v| v.version);
            format!(
                "; the config database is unreachable ({}), serving version {applied}",
                db.error.unwrap_or_default()
            )
        }
        _ => String::new(),
    };
    let (mut status, mut text) = if eligible > 0 {
        (StatusCode::OK, format!("ready: {eligible} of {total} probers can vote{database}\n"))
    } else {
        let why = format!(
            "not ready: none of {total} probers can vote (live, not impaired, heard from within {} ms)\n",
            params.stale_after_ms
        );
        (StatusCode::SERVICE_UNAVAILABLE, why)
    };
    for (fatal, why) in state.extension.as_ref().map(|e| e.readiness()).unwrap_or_default() {
        if fatal && status == StatusCode::OK {
            status = StatusCode::SERVICE_UNAVAILABLE;
            text = format!("not ready: {why}\n{text}");
        } else {
            text.push_str(&format!("{why}\n"));
        }
    }
    (status, text)
}

async fn get_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], (state.metrics)())
}

async fn get_state(State(state): State<AdminState>) -> Json<StateDoc> {
    let view = state.gossip.view().await;
    let config = state.config.load();
    let now = crate::unix_ms();
    // The fold this member acts on (kept current by its `cluster::Follower`), not a second one computed here.
    let health = state.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let members = view
        .members
        .iter()
        .map(|m| MemberDoc {
            id: m.id.clone(),
            role: m.role.map(|r| r.as_str()),
            region: m.region.clone(),
            live: m.live,
            impaired: m.impaired,
            // When this member last saw the heartbeat rise, on its own clock.
            heartbeat_age_ms: health
                .heartbeats
                .get(&m.id)
                .filter(|(_, seen)| *seen > 0)
                .map(|(_, seen)| now.saturating_sub(*seen)),
            disagreement: health.decisions.disagreement.get(m.id.as_str()).copied(),
            config_head: m.config_head.clone().map(VersionDoc::from),
            config_applied: m.config_applied.clone().map(VersionDoc::from),
        })
        .collect::<Vec<_>>();
    let applied = state.source.applied_version().map(VersionDoc::from);
    let config_doc = ConfigDoc {
        store: state.source.store().as_str(),
        head: state.source.head_version().map(VersionDoc::from),
        in_step: members.iter().filter(|m| m.live).all(|m| m.config_applied == applied),
        applied,
        refused: state.source.refusal(),
        database: state.source.database(),
    };
    let nodes = config
        .nodes
        .iter()
        .map(|n| {
            let decision = health.decisions.global.get(&n.id);
            let probers = view
                .members
                .iter()
                .filter_map(|m| {
                    let encoded = m.verdicts.get(n.id.as_str())?;
                    let doc = match geolb_common::verdict::Verdict::decode(encoded) {
                        Ok(v) => VerdictDoc {
                            up: Some(v.up),
                            reason: v.reason.to_string(),
                            since_ms: Some(v.since_ms),
                            age_ms: Some(now.saturating_sub(v.since_ms)),
                            rtt_us: Some(v.rtt_us),
                        },
                        Err(e) => {
                            VerdictDoc { up: None, reason: e.to_string(), since_ms: None, age_ms: None, rtt_us: None }
                        }
                    };
                    Some((m.id.clone(), doc))
                })
                .collect();
            let regional = health
                .decisions
                .regional
                .iter()
                .filter_map(|(r, m)| Some((r.to_string(), m.get(&n.id)?.health)))
                .collect();
            let doc = NodeDoc {
                health: decision.map_or(geolb_common::Health::Unknown, |d| d.health),
                reason: decision.map_or("never_seen", |d| d.reason.as_str()),
                since_ms: decision.map_or(0, |d| d.since_ms),
                down_voters: decision.map_or(0, |d| d.down_voters),
                eligible_voters: decision.map_or(0, |d| d.eligible_voters),
                drained: health.drained.contains(&n.id),
                regional,
                probers,
            };
            (n.id.to_string(), doc)
        })
        .collect();
    let fenced = health.decisions.fenced.iter().map(|f| f.to_string()).collect();
    let overrides = view.overrides.values().filter(|o| o.active(now)).cloned().collect();
    Json(StateDoc {
        now_ms: now,
        gossip: state.gossip.stats().snapshot(),
        config: config_doc,
        members,
        nodes,
        fenced,
        overrides,
        extension: state.extension.as_ref().map(|e| e.state()).unwrap_or_default(),
    })
}

/// What a request needs of its bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any token.
    Read,
    /// Any token, or the peers' secret ([`crate::fleet::peer_secret`]).
    Peer,
    /// A read-write token.
    Write,
}

/// The name of the token the request carries, if it may do what it asks; else the refusal.
pub(crate) fn authorize(state: &AdminState, headers: &HeaderMap, need: Need) -> Result<String, ApiError> {
    let config = state.config.load();
    let peer = if need == Need::Peer { crate::fleet::peer_secret(&config) } else { None };
    if config.admin.tokens.is_empty() && peer.is_none() {
        let why = if config.admin.revoked.is_empty() {
            "this endpoint needs a token: add [admin] token_file or [[admin.tokens]] to the config"
        } else {
            "every admin token is revoked (its file is missing or empty): write a secret into a token file"
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, why));
    }
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"));
    };
    if let Some(token) = config.admin.token(given) {
        if need == Need::Write && !token.write {
            let why = format!("token `{}` is read-only", token.name);
            return Err(ApiError::new(StatusCode::FORBIDDEN, &why));
        }
        return Ok(token.name.clone());
    }
    // Constant-time comparison: the secret is not to be guessed by timing.
    let is_peer = peer.is_some_and(|p| geolb_config::health::same_secret(&p, given));
    if is_peer {
        return Ok("peer".to_owned());
    }
    Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

async fn set_drain(state: AdminState, headers: HeaderMap, id: String, drained: bool) -> Response {
    if let Err(refusal) = authorize(&state, &headers, Need::Write) {
        return refusal.into_response();
    }
    if state.config.load().node(&id).is_none() {
        return (StatusCode::NOT_FOUND, format!("unknown node `{id}`\n")).into_response();
    }
    let _serialized = state.drain_lock.lock().await;
    let now = crate::unix_ms();
    if let Err(e) = state.drains.set(&id, drained, now) {
        tracing::warn!(node = %id, error = %e, "cannot save the drain; it is not made");
        let why = format!("the drain was not made: {e}");
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
    }
    match state.gossip.set_drain(&id, drained, now).await {
        Ok(_) => {
            tracing::info!(node = %id, drained, "operator override");
            (StatusCode::OK, Json(serde_json::json!({ "node": id, "drained": drained, "at_ms": now }))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn drain(State(state): State<AdminState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    set_drain(state, headers, id, true).await
}

async fn undrain(State(state): State<AdminState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    set_drain(state, headers, id, false).await
}

/// Longest an override may last by itself: 30 days.
const MAX_OVERRIDE_TTL_S: u64 = 30 * 24 * 3600;

/// `POST /api/v1/overrides`: a request to set one.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideRequest {
    /// `node:<id>` or `pop:<id>`.
    target: String,
    action: crate::gossip::keys::OverrideAction,
    /// Why: required, shown beside it.
    why: String,
    /// Seconds until it ends by itself.
    ttl_s: Option<u64>,
}

/// `GET /api/v1/overrides`: the overrides in force.
async fn get_overrides(State(state): State<AdminState>) -> Json<Vec<crate::gossip::keys::Override>> {
    let now = crate::unix_ms();
    Json(state.gossip.view().await.overrides.into_values().filter(|o| o.active(now)).collect())
}

/// `POST /api/v1/overrides`: forces a node Up or Down, drains a node or a PoP, or clears the
/// override of a target. Gossiped to every member and saved in this member's `state_dir`.
async fn post_override(State(state): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    use crate::gossip::keys::{MAX_WHY_LEN, Override, OverrideAction, OverrideTarget};
    let by = match authorize(&state, &headers, Need::Write) {
        Ok(by) => by,
        Err(refusal) => return refusal.into_response(),
    };
    let request: OverrideRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let why = format!(
                "expected {{\"target\": \"node:<id>\" or \"pop:<id>\", \"action\": \"up\"|\"down\"|\"drain\"|\"clear\", \"why\": \"…\", \"ttl_s\": optional}}: {e}"
            );
            return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why).into_response();
        }
    };
    let config = state.config.load();
    let refuse = |why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why).into_response();
    let target = match OverrideTarget::parse(&request.target) {
        Some(OverrideTarget::Node(id)) if config.node(&id).is_none() => return refuse(format!("unknown node `{id}`")),
        Some(OverrideTarget::Pop(id)) if config.pop(&id).is_none() => return refuse(format!("unknown pop `{id}`")),
        Some(OverrideTarget::Pop(_)) if matches!(request.action, OverrideAction::Up | OverrideAction::Down) => {
            return refuse("a PoP can be drained or cleared; force its nodes one by one".to_owned());
        }
        Some(t) => t,
        None => return refuse(format!("target `{}` is not `node:<id>` or `pop:<id>`", request.target)),
    };
    let why = request.why.trim().to_owned();
    if why.is_empty() || why.chars().count() > MAX_WHY_LEN || why.chars().any(char::is_control) {
        return refuse(format!("`why` must say why, in 1 to {MAX_WHY_LEN} characters on one line"));
    }
    let ttl_s = request.ttl_s.unwrap_or(0);
    if ttl_s > MAX_OVERRIDE_TTL_S {
        return refuse(format!("ttl_s {ttl_s} is over 30 days ({MAX_OVERRIDE_TTL_S} s)"));
    }
    let now = crate::unix_ms();
    let until_ms = (ttl_s > 0).then(|| now + ttl_s * 1000);
    let o = Override { target, action: request.action, at_ms: now, until_ms, by, why };
    let _serialized = state.drain_lock.lock().await;
    if let Err(e) = state.drains.set_override(&o) {
        tracing::warn!(target = %o.target.encode(), error = %e, "cannot save the override; it is not made");
        let why = format!("the override was not made: {e}");
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
    }
    match state.gossip.set_override(&o).await {
        Ok(_) => {
            tracing::info!(target = %o.target.encode(), action = o.action.as_str(), by = %o.by, why = %o.why, "operator override");
            (StatusCode::OK, Json(o)).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
