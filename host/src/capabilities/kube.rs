//! `ccat:hpc/kube`: the Kubernetes API with the host's credentials.
//!
//! The contract is declared and policy-checked here; the API client itself
//! arrives with the Kubernetes backend. Until then every call that the policy
//! allows answers `unavailable`, saying so.

use crate::bindings::ccat::hpc::kube::{self, KubeError, Propagation};
use crate::policy::Policy;
use crate::state::State;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

pub struct KubeCtx {
    policy: Arc<Policy>,
}

impl KubeCtx {
    pub fn new(policy: Arc<Policy>) -> Self {
        KubeCtx { policy }
    }

    fn check(&self, kind: &str, namespace: &str) -> Result<(), KubeError> {
        let p = &self.policy;
        let name = &p.plugin;
        if !p.kube_namespaces.iter().any(|n| n == namespace) {
            return Err(KubeError::Denied(super::denied(name, "kube", namespace, format!(
                "plugin `{name}` may not use namespace `{namespace}`; `plugins.{name}.k8s_namespaces` grants: {:?}",
                p.kube_namespaces
            ))));
        }
        if !p.kube_kinds.iter().any(|k| k == kind) {
            return Err(KubeError::Denied(super::denied(name, "kube", kind, format!(
                "plugin `{name}` may not use kind `{kind}`; `plugins.{name}.k8s_kinds` grants: {:?}",
                p.kube_kinds
            ))));
        }
        Err(KubeError::Unavailable("this hpc-host build has no Kubernetes client yet".into()))
    }
}

type R<T> = wasmtime::Result<Result<T, KubeError>>;

impl kube::Host for KubeCtx {
    async fn create(&mut self, _api: String, kind: String, ns: String, _body: String) -> R<String> {
        Ok(self.check(&kind, &ns).map(|_| String::new()))
    }
    async fn get(&mut self, _api: String, kind: String, ns: String, _name: String) -> R<String> {
        Ok(self.check(&kind, &ns).map(|_| String::new()))
    }
    async fn list_by_label(&mut self, _api: String, kind: String, ns: String, _sel: String) -> R<String> {
        Ok(self.check(&kind, &ns).map(|_| String::new()))
    }
    async fn delete(&mut self, _api: String, kind: String, ns: String, _name: String, _p: Propagation) -> R<String> {
        Ok(self.check(&kind, &ns).map(|_| String::new()))
    }
    async fn pod_logs(&mut self, ns: String, _pod: String, _c: Option<String>, _t: Option<u32>) -> R<String> {
        Ok(self.check("Pod", &ns).map(|_| String::new()))
    }
}

struct HasKube;
impl HasData for HasKube {
    type Data<'a> = &'a mut KubeCtx;
}

pub fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    kube::add_to_linker::<State, HasKube>(linker, |s| &mut s.kube).map_err(anyhow::Error::from)
}
