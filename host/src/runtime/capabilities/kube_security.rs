//! Kubernetes grants that name the API group, and Pod Security admission in
//! the host.
//!
//! A kind grant is `group/Kind` (`batch/Job`, `apps/Deployment`) or a bare
//! `Kind` for the core group (`Pod`, `ConfigMap`): a `batch/Job` grant does
//! not reach `batch.volcano.sh` Jobs or a custom resource that happens to be
//! called `Job`.
//!
//! Every object a plugin creates is searched for pod specs (any JSON object
//! with a `containers` list: a Pod's `spec`, a Job's or Deployment's
//! template, a CronJob's, or a custom resource's), and each is checked
//! against Kubernetes' Pod Security Standards: `baseline` by default,
//! `restricted` when the policy says `k8s_pod_security = "restricted"`. The
//! pod's service account is the namespace's default unless the policy names
//! others in `k8s_service_accounts`, and its token is not mounted
//! (`automountServiceAccountToken: false` is set) unless the policy sets
//! `k8s_automount_token = true`.

use crate::runtime::bindings::kube::KubeError;
use crate::runtime::policy::Policy;
use serde_json::Value;

/// Capabilities the baseline level allows a container to add.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Sysctls the baseline level allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// Volume types the restricted level allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The group of an `apiVersion` (`batch/v1` -> `batch`, `v1` -> core, ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// How a kind is written in grants and messages: `group/Kind`, or `Kind` for core.
pub fn qualified(api_version: &str, kind: &str) -> String {
    match group_of(api_version) {
        "" => kind.to_owned(),
        g => format!("{g}/{kind}"),
    }
}

/// Whether `kinds` grants `kind` in `api_version`'s group.
pub fn kind_granted(kinds: &[String], api_version: &str, kind: &str) -> bool {
    let group = group_of(api_version);
    kinds.iter().any(|g| match g.rsplit_once('/') {
        Some((gg, k)) => gg == group && k == kind,
        None => group.is_empty() && g == kind,
    })
}

/// The checks of one pod spec, collected as violations.
struct Review<'a> {
    policy: &'a Policy,
    restricted: bool,
    problems: Vec<String>,
}

impl Review<'_> {
    fn no(&mut self, what: String) {
        self.problems.push(what);
    }

    fn pod(&mut self, at: &str, pod: &mut serde_json::Map<String, Value>) {
        for key in ["hostNetwork", "hostPID", "hostIPC", "hostUsers"] {
            let bad = match key {
                // hostUsers: false is the safe value; true (or absent) is the default.
                "hostUsers" => false,
                _ => pod.get(key) == Some(&Value::Bool(true)),
            };
            if bad {
                self.no(format!("{at}.{key} is true"));
            }
        }
        if let Some(vols) = pod.get("volumes").and_then(Value::as_array) {
            for (i, v) in vols.iter().enumerate() {
                if v.get("hostPath").is_some() {
                    self.no(format!("{at}.volumes[{i}] is a hostPath volume"));
                }
                if self.restricted
                    && let Some(o) = v.as_object()
                    && let Some(kind) = o.keys().find(|k| *k != "name")
                    && !RESTRICTED_VOLUMES.contains(&kind.as_str())
                {
                    self.no(format!("{at}.volumes[{i}] is a `{kind}` volume"));
                }
            }
        }
        let psc = pod.get("securityContext").cloned().unwrap_or(Value::Null);
        self.security_context(&format!("{at}.securityContext"), &psc);
        if let Some(sysctls) = psc.get("sysctls").and_then(Value::as_array) {
            for s in sysctls {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                if !SAFE_SYSCTLS.contains(&name) {
                    self.no(format!("{at}.securityContext.sysctls sets `{name}`"));
                }
            }
        }
        let pod_non_root = psc.get("runAsNonRoot") == Some(&Value::Bool(true));
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            if let Some(cs) = pod.get(list).and_then(Value::as_array) {
                for (i, c) in cs.iter().enumerate() {
                    self.container(&format!("{at}.{list}[{i}]"), c, pod_non_root);
                }
            }
        }
        self.service_account(at, pod);
    }

    fn security_context(&mut self, at: &str, sc: &Value) {
        let seccomp = sc.pointer("/seccompProfile/type").and_then(Value::as_str);
        if seccomp == Some("Unconfined") {
            self.no(format!("{at}.seccompProfile is Unconfined"));
        }
        if sc.pointer("/appArmorProfile/type").and_then(Value::as_str) == Some("Unconfined") {
            self.no(format!("{at}.appArmorProfile is Unconfined"));
        }
        if sc.pointer("/windowsOptions/hostProcess") == Some(&Value::Bool(true)) {
            self.no(format!("{at}.windowsOptions.hostProcess is true"));
        }
        if let Some(t) = sc.pointer("/seLinuxOptions/type").and_then(Value::as_str)
            && !matches!(
                t,
                "" | "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t"
            )
        {
            self.no(format!("{at}.seLinuxOptions.type is `{t}`"));
        }
        for key in ["user", "role"] {
            if sc
                .pointer(&format!("/seLinuxOptions/{key}"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                self.no(format!("{at}.seLinuxOptions.{key} is set"));
            }
        }
        if self.restricted && sc.get("runAsUser").and_then(Value::as_i64) == Some(0) {
            self.no(format!("{at}.runAsUser is 0"));
        }
    }

    fn container(&mut self, at: &str, c: &Value, pod_non_root: bool) {
        let sc = c.get("securityContext").cloned().unwrap_or(Value::Null);
        if sc.get("privileged") == Some(&Value::Bool(true)) {
            self.no(format!("{at} is privileged"));
        }
        if sc
            .get("procMount")
            .and_then(Value::as_str)
            .is_some_and(|m| m != "Default")
        {
            self.no(format!("{at}.securityContext.procMount is not Default"));
        }
        self.security_context(&format!("{at}.securityContext"), &sc);
        let added: Vec<&str> = sc
            .pointer("/capabilities/add")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for cap in &added {
            let cap = cap.trim_start_matches("CAP_");
            let ok = if self.restricted {
                cap == "NET_BIND_SERVICE"
            } else {
                BASELINE_CAPS.contains(&cap)
            };
            if !ok {
                self.no(format!("{at} adds capability `{cap}`"));
            }
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for p in ports {
                if p.get("hostPort")
                    .and_then(Value::as_i64)
                    .is_some_and(|h| h != 0)
                {
                    self.no(format!("{at} uses a hostPort"));
                }
            }
        }
        if self.restricted {
            if sc.get("allowPrivilegeEscalation") != Some(&Value::Bool(false)) {
                self.no(format!("{at} does not set allowPrivilegeEscalation: false"));
            }
            let non_root = match sc.get("runAsNonRoot") {
                Some(Value::Bool(b)) => *b,
                _ => pod_non_root,
            };
            if !non_root {
                self.no(format!("{at} does not set runAsNonRoot: true"));
            }
            let drops_all = sc
                .pointer("/capabilities/drop")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
            if !drops_all {
                self.no(format!("{at} does not drop capability ALL"));
            }
        }
    }

    fn service_account(&mut self, at: &str, pod: &mut serde_json::Map<String, Value>) {
        let name = self.policy.plugin.as_str();
        for key in ["serviceAccountName", "serviceAccount"] {
            if let Some(sa) = pod.get(key).and_then(Value::as_str)
                && !sa.is_empty()
                && sa != "default"
                && !self
                    .policy
                    .grants
                    .kube
                    .service_accounts
                    .iter()
                    .any(|g| g == sa)
            {
                self.no(format!(
                    "{at}.{key} is `{sa}`, which `plugins.{name}.k8s_service_accounts` does not grant"
                ));
            }
        }
        match pod.get("automountServiceAccountToken") {
            Some(Value::Bool(true)) if !self.policy.grants.kube.automount_token => self.no(format!(
                "{at}.automountServiceAccountToken is true, which needs `plugins.{name}.k8s_automount_token = true`"
            )),
            None if !self.policy.grants.kube.automount_token => {
                pod.insert("automountServiceAccountToken".into(), Value::Bool(false));
            }
            _ => {}
        }
    }
}

/// Walk `v`, reviewing every object that holds a `containers` list.
fn walk(r: &mut Review<'_>, at: &str, v: &mut Value, depth: usize) {
    if depth > 64 {
        r.no(format!("{at} is nested too deeply to review"));
        return;
    }
    match v {
        Value::Object(map) => {
            if map.get("containers").is_some_and(Value::is_array) {
                r.pod(at, map);
            }
            for (k, child) in map.iter_mut() {
                if k != "containers" && k != "initContainers" && k != "ephemeralContainers" {
                    walk(r, &format!("{at}.{k}"), child, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                walk(r, &format!("{at}[{i}]"), child, depth + 1);
            }
        }
        _ => {}
    }
}

/// Check (and, for the token, amend) an object before it is created; the
/// body to send, or a denial listing every violation.
pub fn admit(policy: &Policy, body: Vec<u8>) -> Result<Vec<u8>, KubeError> {
    let mut v: Value = serde_json::from_slice(&body)
        .map_err(|e| KubeError::Invalid(format!("the object is not JSON: {e}")))?;
    let level = if policy.grants.kube.pod_security == "restricted" {
        "restricted"
    } else {
        "baseline"
    };
    let mut r = Review {
        policy,
        restricted: level == "restricted",
        problems: Vec::new(),
    };
    walk(&mut r, "object", &mut v, 0);
    if !r.problems.is_empty() {
        let name = &policy.plugin;
        return Err(KubeError::Denied(super::denied(
            name,
            "kube",
            "pod-security",
            format!(
                "the object breaks the `{level}` pod security level (`plugins.{name}.k8s_pod_security`): {}",
                r.problems.join("; ")
            ),
        )));
    }
    Ok(serde_json::to_vec(&v).expect("serialisable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::policy::Policy;

    fn policy() -> Policy {
        let mut p = Policy::least_privilege("kubernetes");
        p.grants.kube.namespaces = vec!["ccat".into()];
        p.grants.kube.kinds = vec!["batch/Job".into(), "Pod".into()];
        p
    }

    #[test]
    fn grants_name_the_group() {
        let kinds = vec!["batch/Job".to_owned(), "Pod".to_owned()];
        assert!(kind_granted(&kinds, "batch/v1", "Job"));
        assert!(!kind_granted(&kinds, "batch.volcano.sh/v1alpha1", "Job"));
        assert!(!kind_granted(&kinds, "example.com/v1", "Job"));
        assert!(kind_granted(&kinds, "v1", "Pod"));
        assert!(!kind_granted(&kinds, "example.com/v1", "Pod"));
    }

    #[test]
    fn baseline_refuses_host_access_and_adds_no_token() {
        let p = policy();
        let ok = br#"{"kind":"Job","spec":{"template":{"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#;
        let out: Value = serde_json::from_slice(&admit(&p, ok.to_vec()).unwrap()).unwrap();
        assert_eq!(
            out.pointer("/spec/template/spec/automountServiceAccountToken"),
            Some(&Value::Bool(false))
        );
        let bad = br#"{"spec":{"template":{"spec":{"hostPID":true,"hostNetwork":true,
            "serviceAccountName":"admin",
            "volumes":[{"name":"r","hostPath":{"path":"/"}}],
            "containers":[{"name":"c","securityContext":{"privileged":true,"capabilities":{"add":["SYS_ADMIN"]}},
            "ports":[{"containerPort":1,"hostPort":22}]}]}}}}"#;
        let KubeError::Denied(m) = admit(&p, bad.to_vec()).unwrap_err() else {
            panic!()
        };
        for n in [
            "hostPID",
            "hostNetwork",
            "hostPath",
            "privileged",
            "SYS_ADMIN",
            "hostPort",
            "`admin`",
        ] {
            assert!(m.contains(n), "{m} lacks {n}");
        }
        let mut r = p.clone();
        r.grants.kube.pod_security = "restricted".into();
        assert!(admit(&r, ok.to_vec()).is_err());
    }
}
