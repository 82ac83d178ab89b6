//! The fake's HTTP endpoints, with the real server's codes and bodies.

use super::objects::{fill_job, invalid, not_found, now, obj, random, selector_matches, status};
use super::{Fake, TOKEN, controller};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Shared = State<Arc<Fake>>;
type Params = Query<HashMap<String, String>>;

/// How long the garbage collector takes to delete a Job's pods.
const GC_DELAY: Duration = Duration::from_millis(100);

pub fn router(fake: Arc<Fake>) -> Router {
    Router::new()
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs",
            get(list_jobs).post(create_job),
        )
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            get(get_job).delete(delete_job),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .fallback(|| async {
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                Value::Null,
            )
        })
        .layer(middleware::from_fn_with_state(fake.clone(), gate))
        .with_state(fake)
}

/// Record the request, then authenticate and authorize it.
async fn gate(State(fake): Shared, req: Request, next: Next) -> Response {
    let uri = req.uri().to_string();
    fake.lock().requests.push(format!("{} {uri}", req.method()));
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized", Value::Null);
    }
    let parts: Vec<&str> = req.uri().path().split('/').collect();
    let at = parts.iter().position(|p| *p == "namespaces");
    let ns = at.and_then(|i| parts.get(i + 1)).copied().unwrap_or("");
    let resource = at.and_then(|i| parts.get(i + 2)).copied().unwrap_or("");
    let group = if parts.get(1) == Some(&"apis") {
        parts.get(2).copied().unwrap_or("")
    } else {
        ""
    };
    if fake.opts.forbidden.iter().any(|n| n == ns) {
        let verb = req.method().as_str().to_lowercase();
        let message = format!(
            "{resource}{} is forbidden: User \"hpc\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{ns}\"",
            if group.is_empty() {
                String::new()
            } else {
                format!(".{group}")
            }
        );
        return status(
            403,
            "Forbidden",
            &message,
            json!({"group": group, "kind": resource}),
        );
    }
    if fake.opts.broken.iter().any(|n| n == ns) {
        return status(
            500,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
            Value::Null,
        );
    }
    next.run(req).await
}

fn bad_request(message: &str) -> Response {
    status(400, "BadRequest", message, Value::Null)
}

async fn create_job(State(fake): Shared, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(mut job) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("the body of the request was in an unknown format");
    };
    if !job.is_object() || job["kind"] != "Job" || job["apiVersion"] != "batch/v1" {
        return bad_request(&format!(
            "the API version in the data ({}) does not match the expected API version (batch/v1)",
            job["apiVersion"]
        ));
    }
    if let Some(other) = job["metadata"]["namespace"].as_str().filter(|n| *n != ns) {
        return bad_request(&format!(
            "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
        ));
    }
    if job["metadata"]["name"].as_str().is_none()
        && let Some(prefix) = job["metadata"]["generateName"].as_str()
    {
        let generated = format!("{prefix}{}", random(5));
        obj(&mut job, "metadata").insert("name".into(), json!(generated));
    }
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        let cause = (
            "metadata.name".to_owned(),
            "FieldValueRequired".to_owned(),
            "Required value: name or generateName is required".to_owned(),
        );
        return invalid("Job", "batch", "", &[cause]);
    }
    let errors = super::objects::validate_job(&job);
    if !errors.is_empty() {
        return invalid("Job", "batch", &name, &errors);
    }
    let uid = uuid::Uuid::new_v4().to_string();
    {
        let mut inner = fake.lock();
        let key = Fake::key(&ns, &name);
        if inner.jobs.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("jobs.batch \"{name}\" already exists"),
                json!({"name": name, "group": "batch", "kind": "jobs"}),
            );
        }
        let rv = Fake::next_rv(&mut inner);
        fill_job(&mut job, &ns, &uid, rv);
        inner.jobs.insert(key, job.clone());
    }
    tokio::spawn(controller::run_job(fake.clone(), ns, name, uid));
    (StatusCode::CREATED, axum::Json(job)).into_response()
}

/// A list as the server sends it: items without their own kind and apiVersion.
fn list_of(kind: &str, api_version: &str, rv: u64, items: Vec<Value>) -> Response {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut i| {
            if let Some(o) = i.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            i
        })
        .collect();
    axum::Json(json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}, "items": items}))
        .into_response()
}

/// The objects the query's `labelSelector` matches; the error of a bad selector.
fn select<'a>(
    objects: impl Iterator<Item = &'a Value>,
    q: &HashMap<String, String>,
) -> Result<Vec<Value>, String> {
    let selector = q.get("labelSelector").map(String::as_str).unwrap_or("");
    let mut out = Vec::new();
    for o in objects {
        let labels = &o["metadata"]["labels"];
        match selector_matches(
            selector,
            if labels.is_object() {
                labels
            } else {
                &Value::Null
            },
        ) {
            Ok(true) => out.push(o.clone()),
            Ok(false) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A list call's answer: the `objects` (by namespace and name) in `ns`
/// that the query selects, as a `kind` list.
fn list<'a>(
    kind: &str,
    api_version: &str,
    rv: u64,
    objects: impl Iterator<Item = (&'a (String, String), &'a Value)>,
    ns: &str,
    q: &HashMap<String, String>,
) -> Response {
    let in_ns = objects.filter(|((n, _), _)| n == ns).map(|(_, o)| o);
    match select(in_ns, q) {
        Ok(items) => list_of(kind, api_version, rv, items),
        Err(e) => bad_request(&e),
    }
}

async fn list_jobs(State(fake): Shared, Path(ns): Path<String>, Query(q): Params) -> Response {
    let inner = fake.lock();
    let jobs = inner.jobs.iter();
    list("JobList", "batch/v1", inner.resource_version, jobs, &ns, &q)
}

async fn list_pods(State(fake): Shared, Path(ns): Path<String>, Query(q): Params) -> Response {
    let inner = fake.lock();
    let pods = inner.pods.iter().map(|(key, p)| (key, &p.obj));
    list("PodList", "v1", inner.resource_version, pods, &ns, &q)
}

async fn get_job(State(fake): Shared, Path((ns, name)): Path<(String, String)>) -> Response {
    match fake.lock().jobs.get(&Fake::key(&ns, &name)) {
        Some(j) => axum::Json(j.clone()).into_response(),
        None => not_found("batch", "jobs", &name),
    }
}

async fn get_pod(State(fake): Shared, Path((ns, name)): Path<(String, String)>) -> Response {
    match fake.lock().pods.get(&Fake::key(&ns, &name)) {
        Some(p) => axum::Json(p.obj.clone()).into_response(),
        None => not_found("", "pods", &name),
    }
}

/// DELETE: the policy from DeleteOptions or the query; batch/v1's default is Orphan.
async fn delete_job(
    State(fake): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let policy = options["propagationPolicy"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| q.get("propagationPolicy").cloned());
    let policy = policy.unwrap_or_else(|| "Orphan".into());
    if !["Orphan", "Background", "Foreground"].contains(&policy.as_str()) {
        return invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            &[(
                "propagationPolicy".into(),
                "FieldValueNotSupported".into(),
                format!(
                    "Unsupported value: {policy:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            )],
        );
    }
    let mut inner = fake.lock();
    let key = Fake::key(&ns, &name);
    let Some(job) = inner.jobs.get(&key).cloned() else {
        return not_found("batch", "jobs", &name);
    };
    let uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let owned = |p: &super::Pod| p.obj["metadata"]["ownerReferences"][0]["uid"] == uid.as_str();
    // The Job's pods, which the garbage collector deletes after it.
    let pods_of_job = |inner: &super::Inner| -> Vec<String> {
        inner
            .pods
            .iter()
            .filter(|((n, _), p)| *n == ns && owned(p))
            .map(|((_, p), _)| p.clone())
            .collect()
    };
    match policy.as_str() {
        "Orphan" => {
            // The garbage collector takes the owner reference off the pods; they live on.
            for ((n, _), p) in inner.pods.iter_mut() {
                if *n == ns && owned(p) {
                    obj(&mut p.obj, "metadata").remove("ownerReferences");
                }
            }
            inner.jobs.remove(&key);
            let mut job = job;
            job["metadata"]["deletionTimestamp"] = json!(now());
            job["metadata"]["finalizers"] = json!(["orphan"]);
            axum::Json(job).into_response()
        }
        "Background" => {
            inner.jobs.remove(&key);
            let pods = pods_of_job(&inner);
            drop(inner);
            collect(fake, ns, pods, None);
            let details = json!({"name": name, "group": "batch", "kind": "jobs", "uid": uid});
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}))
                .into_response()
        }
        _ => {
            let j = inner.jobs.get_mut(&key).unwrap();
            j["metadata"]["deletionTimestamp"] = json!(now());
            j["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            j["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
            let job = j.clone();
            let pods = pods_of_job(&inner);
            drop(inner);
            collect(fake, ns, pods, Some(name));
            axum::Json(job).into_response()
        }
    }
}

/// The garbage collector: delete `pods` a moment later, then the Job held by foreground deletion.
fn collect(fake: Arc<Fake>, ns: String, pods: Vec<String>, job: Option<String>) {
    tokio::spawn(async move {
        tokio::time::sleep(GC_DELAY).await;
        for p in &pods {
            fake.delete_pod(&ns, p);
        }
        if let Some(name) = job {
            fake.lock().jobs.remove(&Fake::key(&ns, &name));
        }
    });
}

async fn pod_log(
    State(fake): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let (log, waiting) = {
        let inner = fake.lock();
        let Some(p) = inner.pods.get(&Fake::key(&ns, &name)) else {
            return not_found("", "pods", &name);
        };
        let statuses = p.obj["status"]["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let container = q.get("container").cloned().or_else(|| {
            statuses
                .first()
                .and_then(|c| c["name"].as_str().map(str::to_owned))
        });
        let Some(c) = statuses
            .iter()
            .find(|c| Some(c["name"].as_str().unwrap_or("")) == container.as_deref())
        else {
            return bad_request(&format!(
                "container {} is not valid for pod {name}",
                container.unwrap_or_default()
            ));
        };
        let waiting = c["state"]["waiting"]["reason"]
            .as_str()
            .map(|r| (c["name"].as_str().unwrap_or("").to_owned(), r.to_owned()));
        (p.log.clone(), waiting)
    };
    if let Some((c, reason)) = waiting {
        return bad_request(&format!(
            "container \"{c}\" in pod \"{name}\" is waiting to start: {reason}"
        ));
    }
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(n) = q.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        text = lines[lines.len().saturating_sub(n)..].concat();
    }
    if let Some(n) = q.get("limitBytes").and_then(|n| n.parse::<usize>().ok()) {
        let mut cut = n.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
}
