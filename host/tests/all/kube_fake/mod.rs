//! A stateful fake Kubernetes API server for the tests, faithful to
//! `shared/reference/kubernetes-api-contract.md` for the calls the Kubernetes
//! backend makes: Jobs (create, get, list, delete with Orphan, Background or
//! Foreground propagation) and pods (get, list by label, logs).
//!
//! It serves HTTP on 127.0.0.1 with an ephemeral port and writes a kubeconfig
//! for it, so the real `hpc-host` binary talks to it exactly as to a cluster.
//! Every request needs the kubeconfig's bearer token (401 otherwise); the
//! namespaces in [`Options::forbidden`] answer 403, those in
//! [`Options::broken`] 500. [`FakeApi::requests`] lists what was asked.
//!
//! ```ignore
//! let fake = FakeApi::start(Options::default());
//! env.set("KUBECONFIG", &fake.write_kubeconfig(&env.home, "ccat").display().to_string());
//! ```

mod contract;
mod controller;
pub mod objects;
mod routes;
pub mod scenario;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The token the kubeconfig carries and the fake requires.
pub const TOKEN: &str = "fake-token-for-tests";

/// How the fake behaves.
#[derive(Clone)]
pub struct Options {
    /// From a Job's creation to its pod.
    pub schedule: Duration,
    /// How long a container is `ContainerCreating` before its process starts.
    pub creating: Duration,
    /// Namespaces whose every call is 403 Forbidden.
    pub forbidden: Vec<String>,
    /// Namespaces whose every call is 500 InternalError.
    pub broken: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            schedule: Duration::from_millis(50),
            creating: Duration::from_millis(200),
            forbidden: vec![],
            broken: vec![],
        }
    }
}

/// A pod: its object, its log file, and its process group while it runs.
pub struct Pod {
    pub obj: Value,
    pub log: PathBuf,
    pub pgid: Option<i32>,
}

#[derive(Default)]
struct Inner {
    resource_version: u64,
    /// (namespace, name) -> Job.
    jobs: BTreeMap<(String, String), Value>,
    pods: BTreeMap<(String, String), Pod>,
    /// `METHOD path?query`, in order.
    requests: Vec<String>,
}

/// The server's state, shared by its handlers and controllers.
pub struct Fake {
    inner: Mutex<Inner>,
    opts: Options,
    /// Pods' logs and working folder.
    dir: PathBuf,
}

impl Fake {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_rv(inner: &mut Inner) -> u64 {
        inner.resource_version += 1;
        inner.resource_version
    }

    fn key(ns: &str, name: &str) -> (String, String) {
        (ns.to_owned(), name.to_owned())
    }

    /// The Job at (ns, name) if it is still the one with `uid`.
    fn job(&self, ns: &str, name: &str, uid: &str) -> Option<Value> {
        self.lock()
            .jobs
            .get(&Self::key(ns, name))
            .filter(|j| j["metadata"]["uid"] == uid)
            .cloned()
    }

    fn update_job(&self, ns: &str, name: &str, uid: &str, f: impl FnOnce(&mut Value)) {
        let mut inner = self.lock();
        let rv = Self::next_rv(&mut inner);
        if let Some(j) = inner
            .jobs
            .get_mut(&Self::key(ns, name))
            .filter(|j| j["metadata"]["uid"] == uid)
        {
            f(j);
            j["metadata"]["resourceVersion"] = Value::from(rv.to_string());
        }
    }

    /// The owning Job's (name, uid), if the pod still has an owner.
    fn owner(&self, ns: &str, pod: &str) -> Option<(String, String)> {
        let inner = self.lock();
        let o = &inner.pods.get(&Self::key(ns, pod))?.obj["metadata"]["ownerReferences"][0];
        Some((
            o["name"].as_str()?.to_owned(),
            o["uid"].as_str()?.to_owned(),
        ))
    }

    fn owner_alive(&self, ns: &str, pod: &str) -> bool {
        self.owner(ns, pod)
            .is_some_and(|(name, uid)| self.job(ns, &name, &uid).is_some())
    }

    fn update_job_by_pod(&self, ns: &str, pod: &str, f: impl FnOnce(&mut Value)) {
        if let Some((name, uid)) = self.owner(ns, pod) {
            self.update_job(ns, &name, &uid, f);
        }
    }

    fn add_pod(&self, ns: &str, name: &str, mut pod: Pod) {
        let mut inner = self.lock();
        pod.obj["metadata"]["resourceVersion"] = Value::from(Self::next_rv(&mut inner).to_string());
        inner.pods.insert(Self::key(ns, name), pod);
    }

    fn pod_exists(&self, ns: &str, name: &str) -> bool {
        self.lock().pods.contains_key(&Self::key(ns, name))
    }

    /// Apply `f` to a pod; false if it no longer exists.
    fn update_pod(&self, ns: &str, name: &str, f: impl FnOnce(&mut Pod)) -> bool {
        let mut inner = self.lock();
        let rv = Self::next_rv(&mut inner);
        match inner.pods.get_mut(&Self::key(ns, name)) {
            Some(p) => {
                f(p);
                p.obj["metadata"]["resourceVersion"] = Value::from(rv.to_string());
                true
            }
            None => false,
        }
    }

    /// Delete a pod at once, killing its process group (no grace period).
    fn delete_pod(&self, ns: &str, name: &str) {
        if let Some(p) = self.lock().pods.remove(&Self::key(ns, name)) {
            kill(p.pgid);
        }
    }
}

fn kill(pgid: Option<i32>) {
    if let Some(g) = pgid.filter(|g| *g > 1) {
        // SAFETY: signalling a process group this fake started.
        unsafe { libc::kill(-g, libc::SIGKILL) };
    }
}

/// A running fake API server; stops (and kills its pods' processes) on drop.
pub struct FakeApi {
    pub fake: Arc<Fake>,
    pub url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApi {
    pub fn start(opts: Options) -> FakeApi {
        let dir = std::env::temp_dir().join(format!("hpc-host-kube-fake-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = Arc::new(Fake {
            inner: Mutex::default(),
            opts,
            dir,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = routes::router(fake.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi {
            fake,
            url,
            runtime: Some(runtime),
        }
    }

    /// Write a kubeconfig for this server into `home/.kube/config`; its path.
    pub fn write_kubeconfig(&self, home: &Path, namespace: &str) -> PathBuf {
        write_kubeconfig(home, &self.url, namespace)
    }

    /// The requests served so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.fake.lock().requests.clone()
    }

    /// The process group of a pod's running container, if it runs.
    pub fn pgids_of_job(&self, ns: &str, job: &str) -> Vec<i32> {
        let inner = self.fake.lock();
        inner
            .pods
            .iter()
            .filter(|((n, _), p)| n == ns && p.obj["metadata"]["labels"]["job-name"] == job)
            .filter_map(|(_, p)| p.pgid)
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut self.fake.lock().pods);
        for p in pods.into_values() {
            kill(p.pgid);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.fake.dir);
    }
}

/// A kubeconfig with one cluster at `server`, a user with [`TOKEN`], and a
/// current context; written to `home/.kube/config`.
pub fn write_kubeconfig(home: &Path, server: &str, namespace: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: hpc\n    namespace: {namespace}\n\
         current-context: fake\nusers:\n- name: hpc\n  user:\n    token: {TOKEN}\n"
    );
    let dir = home.join(".kube");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    std::fs::write(&path, text).unwrap();
    path
}
