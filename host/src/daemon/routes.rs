//! The `/v1` routes (docs/daemon-api.md): each one the CLI command of the
//! same name, answering the CLI's JSON shapes and error kinds.

use super::api::{ApiError, WireJob};
use super::{Daemon, now};
use crate::submit::Submit;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body (413 above).
pub const BODY_LIMIT: usize = 16 << 20;
/// How long a request's body may take to arrive (its head: [`super::conn::HEADER_TIMEOUT`]).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// Every request but `wait` and `events` ends within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// An idle event stream sends a heartbeat line this often.
const HEARTBEAT: Duration = Duration::from_secs(15);

type D = State<Arc<Daemon>>;

/// The router of every route, with the timeout and the JSON fallbacks.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/status", post(statuses))
        .route("/v1/jobs/wait", post(wait))
        .route("/v1/jobs/{id}", get(status).delete(cancel))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/submissions/{key}", get(submission))
        .route("/v1/plugins", get(plugins))
        .route("/v1/events", get(events))
        .route("/v1/reload", post(reload))
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::invalid(
                StatusCode::NOT_FOUND,
                format!(
                    "no route `{method} {}`; the API is under `/v1` (docs/daemon-api.md)",
                    uri.path()
                ),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::invalid(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("`{}` does not take `{method}`", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn(timeout))
        .with_state(daemon)
}

async fn timeout(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/v1/events" || path == "/v1/jobs/wait" {
        return next.run(req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable(format!(
            "the request took longer than {} s",
            REQUEST_TIMEOUT.as_secs()
        ))
        .into_response(),
    }
}

/// A route's query string: `?backend=NAME` (any route), `&job_ids=A,B` (events).
///
/// As an extractor, a query string that does not parse is bad input in the
/// API's error shape (axum's own rejection would answer plain text).
#[derive(Deserialize)]
struct BackendQuery {
    backend: Option<String>,
    job_ids: Option<String>,
}

impl BackendQuery {
    fn backend(&self, d: &Daemon) -> String {
        self.backend
            .clone()
            .filter(|b| !b.is_empty())
            .map(|b| b.to_ascii_lowercase())
            .unwrap_or_else(|| d.config().settings.backend.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BackendQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::from_request_parts(parts, state).await.map_err(|e| {
            ApiError::invalid(StatusCode::BAD_REQUEST, format!("bad query string: {e}"))
        })?;
        Ok(q)
    }
}

/// The backend a request is for: its `?backend=`, lowercased, or else the
/// settings' default.
struct Backend(String);

impl FromRequestParts<Arc<Daemon>> for Backend {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Daemon>) -> Result<Self, ApiError> {
        let q = BackendQuery::from_request_parts(parts, d).await?;
        Ok(Backend(q.backend(d)))
    }
}

/// Read a body of at most `BODY_LIMIT` bytes, sent within `BODY_TIMEOUT`.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT));
    let Ok(read) = read.await else {
        return Err(ApiError::invalid(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    read.map_err(|e| {
        let too_large =
            std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {} bytes", BODY_LIMIT),
            )
        } else {
            ApiError::invalid(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

async fn read_json<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn health(State(d): D) -> Response {
    let c = d.config();
    let (jobs, open) = d.tracker.counts();
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "contract": crate::runtime::bindings::CONTRACT_VERSION,
        "pid": std::process::id(),
        "uid": unsafe { libc::geteuid() },
        "socket": d.socket.display().to_string(),
        "settings_file": c.settings.file.as_ref().map(|f| f.display().to_string()),
        "env": c.settings.env,
        "backend": c.settings.backend,
        "started_at": d.started_at,
        "fingerprint": c.fingerprint,
        "jobs_tracked": jobs,
        "jobs_open": open,
        "plugin_calls": d.tracker.calls.load(std::sync::atomic::Ordering::Relaxed),
        "node": d.shared.as_ref().map(|s| s.me.clone()),
        "poll_lease": d.tracker.leases(),
    }))
    .into_response()
}

async fn submit(State(d): D, Backend(backend): Backend, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::invalid(StatusCode::BAD_REQUEST, "the job spec is not UTF-8"))?;
    let spec = match crate::submit::spec::parse_specs(text)? {
        crate::submit::spec::Specs::One(spec) => spec,
        crate::submit::spec::Specs::Many(crate::submit::spec::Batch { items, .. }) => {
            let plugin = d.config().plugin(&backend)?;
            let results = plugin.submit_parsed(items).await?;
            for (id, _) in results.iter().flatten().filter(|(_, new)| *new) {
                d.track_submitted(&backend, id);
            }
            let results: Vec<_> = results
                .into_iter()
                .map(super::api::submitted_json)
                .collect();
            return Ok(axum::Json(results).into_response());
        }
    };
    let plugin = d.config().plugin(&backend)?;
    let (id, new) = plugin.submit_new(&spec).await?;
    // A job just made is pending until the backend says otherwise; one that
    // an idempotency key names may have ended long ago: it is fetched when
    // asked about, never assumed pending.
    if new {
        d.track_submitted(&backend, &id);
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "job_id": id })),
    )
        .into_response())
}

fn wire(backend: &str, ids: &[String], answers: Vec<super::tracker::Answer>) -> Vec<WireJob> {
    ids.iter()
        .zip(answers)
        .map(|(id, a)| match a {
            Ok((info, at)) => WireJob::known(&info, at, backend),
            Err(e) => WireJob::failed(id, &e, backend),
        })
        .collect()
}

async fn status(
    State(d): D,
    Backend(backend): Backend,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ids = [id];
    let mut answers = d.statuses(&backend, &ids).await?;
    match answers.remove(0) {
        Ok((info, at)) => Ok(axum::Json(WireJob::known(&info, at, &backend)).into_response()),
        Err(e) => {
            let (kind, message) = crate::runtime::error::kind_and_message(&e);
            Err(ApiError::of_backend(
                &e,
                format!("plugin `{backend}`: get-status: {kind}: {message}"),
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ids {
    job_ids: Vec<String>,
    #[serde(default)]
    timeout: Option<f64>,
}

impl Ids {
    /// The body of `status` and `wait`: JSON naming at least one job.
    async fn read(body: Body) -> Result<Ids, ApiError> {
        let ids: Ids = read_json(body).await?;
        if ids.job_ids.is_empty() {
            return Err(ApiError::invalid(
                StatusCode::BAD_REQUEST,
                "`job_ids` is empty",
            ));
        }
        Ok(ids)
    }
}

/// The jobs of a backend this daemon knows (submitted through it, or asked
/// about, since it started), as last observed, by id.
async fn list(State(d): D, Backend(backend): Backend) -> Result<Response, ApiError> {
    d.config().plugin(&backend)?;
    Ok(axum::Json(d.tracker.known(&backend)).into_response())
}

async fn statuses(
    State(d): D,
    Backend(backend): Backend,
    body: Body,
) -> Result<Response, ApiError> {
    let req = Ids::read(body).await?;
    let answers = d.statuses(&backend, &req.job_ids).await?;
    Ok(axum::Json(wire(&backend, &req.job_ids, answers)).into_response())
}

async fn wait(State(d): D, Backend(backend): Backend, body: Body) -> Result<Response, ApiError> {
    let req = Ids::read(body).await?;
    if req.timeout.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err(ApiError::invalid(
            StatusCode::BAD_REQUEST,
            "`timeout` must be a number of seconds ≥ 0",
        ));
    }
    let deadline = req
        .timeout
        .map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t.min(1e9)));
    let wanted: HashSet<&String> = req.job_ids.iter().collect();
    // Job-end datagrams naming all of these make the poller poll now.
    let _waiting = d.tracker.waiting(&backend, &req.job_ids);
    let mut events = d.tracker.events.subscribe();
    let mut shutdown = d.shutdown.subscribe();
    loop {
        let answers = d.statuses(&backend, &req.job_ids).await?;
        let open = answers
            .iter()
            .any(|a| matches!(a, Ok((i, _)) if !i.status.is_terminal()));
        let timed_out = deadline.is_some_and(|t| tokio::time::Instant::now() >= t);
        if !open || timed_out {
            let jobs = wire(&backend, &req.job_ids, answers);
            return Ok(
                axum::Json(serde_json::json!({ "complete": !open, "jobs": jobs })).into_response(),
            );
        }
        // Until a change of one of these jobs, the deadline, or a recheck.
        let recheck = tokio::time::Instant::now() + Duration::from_secs(5);
        let until = deadline.map_or(recheck, |t| t.min(recheck));
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(e) if e.backend == backend && wanted.contains(&e.info.job_id) => break,
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = tokio::time::sleep_until(until) => break,
                _ = shutdown.changed() => return Err(ApiError::unavailable("the daemon is shutting down")),
            }
        }
    }
}

async fn cancel(
    State(d): D,
    Backend(backend): Backend,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    d.config().plugin(&backend)?.cancel(&id).await?;
    Ok(axum::Json(serde_json::json!({ "job_id": id, "cancelled": true })).into_response())
}

async fn logs(
    State(d): D,
    Backend(backend): Backend,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let l = d.config().plugin(&backend)?.get_logs(&id).await?;
    Ok(
        axum::Json(serde_json::json!({ "job_id": id, "stdout": l.stdout, "stderr": l.stderr }))
            .into_response(),
    )
}

/// What became of the submit with an idempotency key (`hpc-host find`):
/// 200 with its `state` (`made`, `in-progress`, `never-made`) and `job_id`.
async fn submission(
    State(d): D,
    Backend(backend): Backend,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let plugin = d.config().plugin(&backend)?;
    let found = plugin.lookup(&key).await?;
    Ok(axum::Json(serde_json::json!({
        "idempotency_key": key, "state": found.state(), "job_id": found.job_id(),
    }))
    .into_response())
}

async fn plugins(State(d): D) -> Result<Response, ApiError> {
    let c = d.config();
    let rows = c.host.plugin_rows()?;
    Ok(axum::Json(rows).into_response())
}

async fn reload(State(d): D) -> Result<Response, ApiError> {
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || d2.reload())
        .await
        .map_err(|e| ApiError::unavailable(format!("reload failed: {e}")))??;
    Ok(axum::Json(serde_json::json!({ "reloaded": true })).into_response())
}

/// NDJSON: the current state of each named job, then every change, with a
/// heartbeat line when idle. Ends when the client goes away or the daemon stops.
async fn events(State(d): D, q: BackendQuery) -> Result<Response, ApiError> {
    let backend_filter = q.backend.clone().map(|b| b.to_ascii_lowercase());
    let ids: Option<Vec<String>> = q.job_ids.as_ref().map(|s| {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let rx = d.tracker.events.subscribe();
    let mut first = Vec::new();
    if let Some(ids) = ids.as_ref().filter(|i| !i.is_empty()) {
        let backend = q.backend(&d);
        let answers = d.statuses(&backend, ids).await?;
        for (id, a) in ids.iter().zip(answers) {
            let mut v = match a {
                Ok((info, at)) => serde_json::to_value(WireJob::known(&info, at, &backend)),
                Err(e) => serde_json::to_value(WireJob::failed(id, &e, &backend)),
            }
            .unwrap_or_default();
            v["previous"] = serde_json::Value::Null;
            first.push(line(&v));
        }
    }
    let wanted: Option<HashSet<String>> = ids.map(|i| i.into_iter().collect());
    let default_backend = q.backend(&d);
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut shutdown = d.shutdown.subscribe();
    tokio::spawn(async move {
        let mut rx = rx;
        for l in first {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                e = rx.recv() => match e {
                    Ok(e) => {
                        let backend_ok = match (&backend_filter, &wanted) {
                            (Some(b), _) => &e.backend == b,
                            (None, Some(_)) => e.backend == default_backend,
                            (None, None) => true,
                        };
                        let id_ok = wanted.as_ref().is_none_or(|w| w.contains(&e.info.job_id));
                        if !(backend_ok && id_ok) { continue; }
                        line(&e.json())
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => line(&serde_json::json!({ "lagged": n })),
                    Err(_) => return,
                },
                _ = tokio::time::sleep(HEARTBEAT) => line(&serde_json::json!({ "heartbeat": now() })),
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            };
            if tx.send(Ok(next)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

fn line(v: &serde_json::Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}
