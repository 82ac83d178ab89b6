//! `ccat:hpc/kube`: the Kubernetes API with the host's credentials.
//!
//! The client is built once per loaded plugin, on its first call, from
//! `kube::Config::infer()`: `KUBECONFIG`, else `~/.kube/config`, else the
//! in-cluster service account. Nothing reads a kubeconfig unless a plugin
//! makes a call. Plugins pass and receive JSON text and never see the
//! credentials.
//!
//! Every call is checked against the plugin's policy (namespaces and kinds)
//! and every name that goes into a URL path is checked to be a Kubernetes
//! name, since the request builder does not escape it. Each call is bounded
//! by [`CALL_TIMEOUT`], so a dead or stuck API server is `unavailable`, never
//! a hang. Errors map onto the contract: 404 not-found, 409 conflict, 400/422
//! invalid (with the server's message), 401/403 unauthorized, connection
//! failures, timeouts, 429 and 5xx unavailable.

use super::Has;
use crate::runtime::bindings::kube::{self as wit, KubeError, Propagation};
use crate::runtime::policy::Policy;
use crate::runtime::state::State;
use ::kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use ::kube::core::params::GetParams;
use ::kube::core::subresource::LogParams;
use ::kube::core::{ApiResource, DynamicObject, GroupVersionKind, Request, Resource};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use wasmtime::component::{HasData, Linker};

/// The longest any one API call may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a TCP (and TLS) connection to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest object a plugin may create (etcd's own limit is 1.5 MiB).
const MAX_BODY: usize = 1 << 20;
/// The longest name in a URL path (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `ccat:hpc/kube`: granted by at least one namespace.
pub struct Kube;

/// The Kubernetes keys of a policy table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSection {
    pub k8s_namespaces: Option<Vec<String>>,
    pub k8s_kinds: Option<Vec<String>>,
    pub k8s_pod_security: Option<String>,
    pub k8s_service_accounts: Option<Vec<String>>,
    pub k8s_automount_token: Option<bool>,
}

/// What a plugin may do through the Kubernetes API.
#[derive(Debug, Clone)]
pub struct KubeGrant {
    pub namespaces: Vec<String>,
    /// Kinds as `group/Kind`, or `Kind` for the core group.
    pub kinds: Vec<String>,
    /// The pod security level objects must meet: `baseline` or `restricted`.
    pub pod_security: String,
    /// Service accounts a pod may name (besides the namespace's `default`).
    pub service_accounts: Vec<String>,
    /// May a pod mount its service account token.
    pub automount_token: bool,
}

impl super::Capability for Kube {
    const INTERFACE: Option<&'static str> = Some("kube");
    const GRANT_KEYS: &'static [&'static str] = &["k8s_namespaces"];
    type Section = KubeSection;
    type Grant = KubeGrant;
    type Ctx = KubeCtx;

    fn least_privilege(_plugin: &str) -> KubeGrant {
        KubeGrant {
            namespaces: Vec::new(),
            kinds: Vec::new(),
            pod_security: "baseline".into(),
            service_accounts: Vec::new(),
            automount_token: false,
        }
    }

    fn apply(g: &mut KubeGrant, s: KubeSection, plugin: &str) -> Result<(), String> {
        if let Some(level) = s.k8s_pod_security {
            if level != "baseline" && level != "restricted" {
                return Err(format!(
                    "`plugins.{plugin}.k8s_pod_security` must be `baseline` or `restricted`, not `{level}`"
                ));
            }
            g.pod_security = level;
        }
        if let Some(v) = s.k8s_namespaces {
            g.namespaces = v;
        }
        if let Some(v) = s.k8s_kinds {
            g.kinds = v;
        }
        if let Some(v) = s.k8s_service_accounts {
            g.service_accounts = v;
        }
        if let Some(v) = s.k8s_automount_token {
            g.automount_token = v;
        }
        Ok(())
    }

    fn granted(g: &KubeGrant) -> bool {
        !g.namespaces.is_empty()
    }

    fn inspect(g: &KubeGrant, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("k8s_namespaces".into(), serde_json::json!(g.namespaces));
        out.insert("k8s_kinds".into(), serde_json::json!(g.kinds));
        out.insert("k8s_pod_security".into(), serde_json::json!(g.pod_security));
        out.insert(
            "k8s_service_accounts".into(),
            serde_json::json!(g.service_accounts),
        );
        out.insert(
            "k8s_automount_token".into(),
            serde_json::json!(g.automount_token),
        );
    }

    fn context(policy: &Arc<Policy>, _: &KubeGrant, _: &super::Setup) -> KubeCtx {
        KubeCtx::new(policy.clone())
    }

    fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
        wit::add_to_linker::<State, HasKube>(linker, <State as Has<Kube>>::ctx)
            .map_err(anyhow::Error::from)
    }
}

/// The kube capability of one plugin: its policy and its lazily built client.
#[derive(Clone)]
pub struct KubeCtx {
    policy: Arc<Policy>,
    /// Shared by every call of one loaded plugin; empty until a call needs it.
    client: Arc<OnceCell<::kube::Client>>,
}

impl KubeCtx {
    /// A context that makes no client until the first call.
    pub fn new(policy: Arc<Policy>) -> Self {
        KubeCtx {
            policy,
            client: Arc::default(),
        }
    }

    fn check(&self, api_version: &str, kind: &str, namespace: &str) -> Result<(), KubeError> {
        let p = &self.policy;
        let name = &p.plugin;
        if !p.grants.kube.namespaces.iter().any(|n| n == namespace) {
            return Err(KubeError::Denied(super::denied(
                name,
                "kube",
                namespace,
                format!(
                    "plugin `{name}` may not use namespace `{namespace}`; `plugins.{name}.k8s_namespaces` grants: {:?}",
                    p.grants.kube.namespaces
                ),
            )));
        }
        if !super::kube_security::kind_granted(&p.grants.kube.kinds, api_version, kind) {
            let kind = super::kube_security::qualified(api_version, kind);
            return Err(KubeError::Denied(super::denied(
                name,
                "kube",
                &kind,
                format!(
                    "plugin `{name}` may not use kind `{kind}`; `plugins.{name}.k8s_kinds` grants: {:?}",
                    p.grants.kube.kinds
                ),
            )));
        }
        Ok(())
    }

    async fn client(&self) -> Result<::kube::Client, KubeError> {
        let client = self.client.get_or_try_init(|| async {
            let mut config = ::kube::Config::infer().await.map_err(|e| {
                tracing::warn!(plugin = %self.policy.plugin, "no Kubernetes configuration: {}", chain(&e));
                KubeError::Other(format!("the host has no usable Kubernetes configuration: {}", chain(&e)))
            })?;
            config.connect_timeout = Some(CONNECT_TIMEOUT);
            config.read_timeout = Some(CALL_TIMEOUT);
            config.write_timeout = Some(CALL_TIMEOUT);
            ::kube::Client::try_from(config).map_err(|e| convert(&e))
        });
        Ok(client.await?.clone())
    }

    /// Policy check, then one bounded request; the answer's body as text.
    async fn call(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        build: impl FnOnce() -> Result<http::Request<Vec<u8>>, KubeError>,
    ) -> Result<String, KubeError> {
        self.check(api_version, kind, namespace)?;
        check_name("namespace", namespace)?;
        let request = build()?;
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let start = Instant::now();
        let result = match tokio::time::timeout(CALL_TIMEOUT, async {
            self.client()
                .await?
                .request_text(request)
                .await
                .map_err(|e| convert(&e))
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(KubeError::Unavailable(format!(
                "the Kubernetes API server did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
        };
        // The answer goes into the plugin's memory: bound it like kv answers.
        let max =
            super::kv_budget::MAX_ANSWER_BYTES.max(self.policy.limits.output_bytes + (64 << 10));
        let result = result.and_then(|text| {
            if text.len() > max {
                Err(KubeError::Other(format!(
                    "the API server's answer has {} bytes, more than the {} a plugin may receive: select fewer objects",
                    text.len(),
                    max
                )))
            } else {
                Ok(text)
            }
        });
        let ms = start.elapsed().as_millis() as u64;
        let plugin = &self.policy.plugin;
        match &result {
            Ok(_) => tracing::debug!(plugin, %method, path, ms, "kube call"),
            Err(e) => tracing::info!(plugin, %method, path, ms, "kube call failed: {e:?}"),
        }
        result
    }
}

/// The URL of a namespaced collection: `/apis/batch/v1/namespaces/ns/jobs`.
fn collection(api_version: &str, kind: &str, namespace: &str) -> Result<Request, KubeError> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let version_ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    // The group is a DNS subdomain (`batch`, `apps`, `example.com`).
    if !(group.is_empty() || check_name("", group).is_ok()) || !version_ok {
        return Err(KubeError::Invalid(format!(
            "`{api_version}` is not an API version"
        )));
    }
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(KubeError::Invalid(format!("`{kind}` is not a kind")));
    }
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Ok(Request::new(DynamicObject::url_path(
        &resource,
        Some(namespace),
    )))
}

/// A name that may go into a URL path: an RFC 1123 subdomain.
fn check_name(what: &str, name: &str) -> Result<(), KubeError> {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'.');
    if ok {
        Ok(())
    } else {
        Err(KubeError::Invalid(format!(
            "`{name}` is not a valid Kubernetes {what}"
        )))
    }
}

/// A body to create: JSON, of the kind and namespace that were checked.
fn check_body(
    api_version: &str,
    kind: &str,
    namespace: &str,
    body: &str,
) -> Result<Vec<u8>, KubeError> {
    if body.len() > MAX_BODY {
        return Err(KubeError::Invalid(format!(
            "the object is larger than {MAX_BODY} bytes"
        )));
    }
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| KubeError::Invalid(format!("the object is not JSON: {e}")))?;
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(&v, |v, k| v.get(k))
            .and_then(|v| v.as_str())
    };
    let mismatch = |what: &str, got: &str, want: &str| {
        Err(KubeError::Invalid(format!(
            "the object's {what} is `{got}`, but the call names `{want}`"
        )))
    };
    if !v.is_object() {
        return Err(KubeError::Invalid("the object is not a JSON object".into()));
    }
    match (
        field(&["kind"]),
        field(&["apiVersion"]),
        field(&["metadata", "namespace"]),
    ) {
        (Some(k), _, _) if k != kind => mismatch("kind", k, kind),
        (_, Some(a), _) if a != api_version => mismatch("apiVersion", a, api_version),
        (_, _, Some(n)) if n != namespace => mismatch("namespace", n, namespace),
        _ => Ok(body.as_bytes().to_vec()),
    }
}

/// An error with its causes: hyper's own message ("client error (Connect)")
/// hides the one that matters ("Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A `kube::Error` in the contract's terms.
fn convert(e: &::kube::Error) -> KubeError {
    match e {
        ::kube::Error::Api(s) => {
            let message = if s.message.is_empty() {
                format!("{} ({})", s.reason, s.code)
            } else {
                s.message.clone()
            };
            match s.code {
                404 => KubeError::NotFound(message),
                409 => KubeError::Conflict(message),
                400 | 422 => KubeError::Invalid(message),
                401 | 403 => KubeError::Unauthorized(message),
                408 | 429 | 500..=599 => {
                    KubeError::Unavailable(format!("the API server answered {}: {message}", s.code))
                }
                code => KubeError::Other(format!("the API server answered {code}: {message}")),
            }
        }
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => KubeError::Unavailable(
            format!("cannot reach the Kubernetes API server: {}", chain(e)),
        ),
        ::kube::Error::Auth(_) => {
            // The details may quote a credential helper's output: the admin's log gets them.
            tracing::warn!("kubernetes credentials: {}", chain(e));
            KubeError::Unauthorized(
                "the host could not obtain Kubernetes credentials (see the host's log)".into(),
            )
        }
        other => {
            tracing::warn!("kubernetes client error: {}", chain(other));
            KubeError::Other(format!("kubernetes client: {other}"))
        }
    }
}

fn build_err(e: ::kube::core::request::Error) -> KubeError {
    KubeError::Invalid(format!("cannot build the request: {e}"))
}

type R<T> = wasmtime::Result<Result<T, KubeError>>;

impl wit::Host for KubeCtx {
    async fn create(&mut self, api: String, kind: String, ns: String, body: String) -> R<String> {
        Ok(self
            .call(&api, &kind, &ns, || {
                let body = check_body(&api, &kind, &ns, &body)?;
                let body = super::kube_security::admit(&self.policy, body)?;
                collection(&api, &kind, &ns)?
                    .create(&PostParams::default(), body)
                    .map_err(build_err)
            })
            .await)
    }

    async fn get(&mut self, api: String, kind: String, ns: String, name: String) -> R<String> {
        Ok(self
            .call(&api, &kind, &ns, || {
                check_name("name", &name)?;
                collection(&api, &kind, &ns)?
                    .get(&name, &GetParams::default())
                    .map_err(build_err)
            })
            .await)
    }

    async fn list_by_label(
        &mut self,
        api: String,
        kind: String,
        ns: String,
        sel: String,
    ) -> R<String> {
        Ok(self
            .call(&api, &kind, &ns, || {
                collection(&api, &kind, &ns)?
                    .list(&ListParams::default().labels(&sel))
                    .map_err(build_err)
            })
            .await)
    }

    async fn delete(
        &mut self,
        api: String,
        kind: String,
        ns: String,
        name: String,
        p: Propagation,
    ) -> R<String> {
        // Always a policy: for batch/v1 none means Orphan, which leaves the pods running.
        let policy = match p {
            Propagation::Background => PropagationPolicy::Background,
            Propagation::Foreground => PropagationPolicy::Foreground,
        };
        Ok(self
            .call(&api, &kind, &ns, || {
                check_name("name", &name)?;
                let params = DeleteParams {
                    propagation_policy: Some(policy),
                    ..Default::default()
                };
                collection(&api, &kind, &ns)?
                    .delete(&name, &params)
                    .map_err(build_err)
            })
            .await)
    }

    async fn pod_logs(
        &mut self,
        ns: String,
        pod: String,
        container: Option<String>,
        tail: Option<u32>,
    ) -> R<String> {
        let limit_bytes = self.policy.limits.output_bytes as i64;
        Ok(self
            .call("v1", "Pod", &ns, || {
                check_name("pod name", &pod)?;
                if let Some(c) = &container {
                    check_name("container name", c)?;
                }
                let params = LogParams {
                    container,
                    tail_lines: tail.map(i64::from),
                    // The server cuts the log: a chatty job cannot fill the host's memory.
                    limit_bytes: Some(limit_bytes),
                    ..Default::default()
                };
                collection("v1", "Pod", &ns)?
                    .logs(&pod, &params)
                    .map_err(build_err)
            })
            .await)
    }
}

struct HasKube;
impl HasData for HasKube {
    type Data<'a> = &'a mut KubeCtx;
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
