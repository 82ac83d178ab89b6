//! What each plugin may do: the programs it may run, the folders it may see,
//! its kv prefix, its Kubernetes namespaces and kinds, and its limits.
//!
//! Every plugin starts from least privilege ([`Policy::least_privilege`]),
//! gets what its request may have ([`crate::request`]), and then the
//! `[default.plugins.<name>]` table in settings.toml overrides key by key.

use crate::request::Request;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Resource limits of one plugin call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of the plugin instance.
    pub memory_bytes: usize,
    /// CPU time the plugin's own code may use per call (time spent waiting
    /// in host calls does not count).
    pub cpu_time: Duration,
    /// Wall-clock time of a whole call, host calls included.
    pub wall_time: Duration,
    /// Output kept from a program the plugin runs, per stream.
    pub output_bytes: usize,
    /// Programs the plugin may have running at once.
    pub processes: usize,
    /// Programs the plugin may start in one call: a status query needs a
    /// handful, so a flood is cut off long before it costs the machine.
    pub runs_per_call: usize,
    /// Bytes (keys and values) the plugin may keep in the kv store, across
    /// all its calls (see [`crate::store`]'s `quota` module).
    pub kv_bytes: u64,
    /// Keys the plugin may keep in the kv store, across all its calls.
    pub kv_keys: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            cpu_time: Duration::from_secs(10),
            wall_time: Duration::from_secs(120),
            output_bytes: 16 << 20,
            processes: 8,
            runs_per_call: 64,
            // A job record is ~1 KiB: 64 MiB holds tens of thousands, far more
            // than any backend keeps open, and is small next to a Redis server.
            kv_bytes: 64 << 20,
            kv_keys: 100_000,
        }
    }
}

/// The resolved policy of one plugin.
#[derive(Debug, Clone)]
pub struct Policy {
    pub plugin: String,
    /// Logical program name -> absolute path.
    pub programs: BTreeMap<String, PathBuf>,
    /// Folders preopened read-write at their own paths.
    pub dirs: Vec<PathBuf>,
    /// Prefix the host puts before every kv key of this plugin.
    pub kv_prefix: String,
    /// Host environment variables passed through to programs the plugin runs.
    pub env: Vec<String>,
    /// Variables the plugin itself may set for a program it runs (names, or
    /// prefixes ending in `*`); anything else is refused.
    pub program_env: Vec<String>,
    /// May start supervised jobs (`process.spawn-job`).
    pub supervise: bool,
    pub kube_namespaces: Vec<String>,
    /// Kinds as `group/Kind`, or `Kind` for the core group.
    pub kube_kinds: Vec<String>,
    /// The pod security level objects must meet: `baseline` or `restricted`.
    pub kube_pod_security: String,
    /// Service accounts a pod may name (besides the namespace's `default`).
    pub kube_service_accounts: Vec<String>,
    /// May a pod mount its service account token.
    pub kube_automount_token: bool,
    /// Only a `.wasm` with this sha256 (hex) may load under this name.
    pub sha256: Option<String>,
    /// How often the daemon polls this backend for its open jobs, unless
    /// `HPC_POLL_SECONDS` says otherwise (`None`: the host's default).
    pub poll_seconds: Option<f64>,
    pub limits: Limits,
    /// Passed to the plugin through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// For each policy key, the settings its request's placeholders named
    /// (`k8s_namespaces` -> `K8S_NAMESPACE`): the hints of a refusal name them.
    pub placeholders: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// Why a policy cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A settings table or request has a bad key or value.
    #[error("{message}")]
    Invalid { message: String },
    /// A site plugin requests more than the settings grant.
    #[error("{message}")]
    NotGranted { message: String },
}

/// A `[<env>.plugins.<name>]` table. Every key is optional; unknown keys are errors.
///
/// ```toml
/// [default.plugins.slurm]
/// programs = { sbatch = "/usr/bin/sbatch", squeue = "/usr/bin/squeue" }
/// dirs = ["/data/ccat/workspaces"]
/// env = ["SLURM_CONF"]
/// memory_mb = 64
/// max_runs_per_call = 16
/// kv_max_bytes = 16777216
/// kv_max_keys = 10000
/// [default.plugins.slurm.config]
/// HPC_SLURM_WORKDIR = "/data/ccat/workspaces"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub programs: Option<BTreeMap<String, PathBuf>>,
    pub dirs: Option<Vec<PathBuf>>,
    pub kv_prefix: Option<String>,
    pub env: Option<Vec<String>>,
    pub program_env: Option<Vec<String>>,
    pub supervise: Option<bool>,
    pub k8s_namespaces: Option<Vec<String>>,
    pub k8s_kinds: Option<Vec<String>>,
    pub k8s_pod_security: Option<String>,
    pub k8s_service_accounts: Option<Vec<String>>,
    pub k8s_automount_token: Option<bool>,
    pub sha256: Option<String>,
    pub poll_seconds: Option<f64>,
    pub memory_mb: Option<usize>,
    pub cpu_seconds: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub output_bytes: Option<usize>,
    pub max_processes: Option<usize>,
    pub max_runs_per_call: Option<usize>,
    pub kv_max_bytes: Option<u64>,
    pub kv_max_keys: Option<u64>,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// The shortest poll interval a policy may set.
pub const MIN_POLL_SECONDS: f64 = 0.05;

/// The longest time limit a policy may set (a year): far beyond any call,
/// and small enough that adding it to an instant never overflows.
pub const MAX_SECONDS: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest kv quota a policy may set (1 PiB of bytes, or of keys): the
/// Redis side counts in Lua numbers, exact only below 2^53.
pub const MAX_KV_QUOTA: u64 = 1 << 50;

impl Policy {
    /// The least-privilege policy every plugin starts from: a kv namespace of
    /// its own, the default limits, and nothing else. What a plugin needs
    /// beyond it comes from its request ([`crate::request`]) and the settings.
    pub fn least_privilege(plugin: &str) -> Policy {
        Policy {
            plugin: plugin.to_owned(),
            programs: BTreeMap::new(),
            dirs: Vec::new(),
            kv_prefix: format!("hpc-host:{plugin}:"),
            env: Vec::new(),
            program_env: Vec::new(),
            supervise: false,
            kube_namespaces: Vec::new(),
            kube_kinds: Vec::new(),
            kube_pod_security: "baseline".into(),
            kube_service_accounts: Vec::new(),
            kube_automount_token: false,
            sha256: None,
            poll_seconds: None,
            limits: Limits::default(),
            config: BTreeMap::new(),
            placeholders: BTreeMap::new(),
        }
    }

    /// A plugin's policy: least privilege, then what its request may have
    /// (all of a built-in's; of a site plugin's, what needs no grant), then
    /// the settings table, key by key.
    pub fn resolve(
        plugin: &str,
        request: Option<&Request>,
        grant: Option<&toml::Table>,
    ) -> Result<Policy, PolicyError> {
        let mut p = Policy::least_privilege(plugin);
        let table_error = |what: String, e: toml::de::Error| PolicyError::Invalid {
            message: format!("{what}: {e}"),
        };
        if let Some(r) = request {
            let asked = r
                .granted(plugin, grant, &p.limits)
                .map_err(|message| PolicyError::NotGranted { message })?;
            let file: PolicyFile = toml::Value::Table(asked)
                .try_into()
                .map_err(|e| table_error(format!("the policy request `{}`", r.origin), e))?;
            p.apply(file)
                .map_err(|message| PolicyError::Invalid { message })?;
            p.placeholders = r.placeholders.clone();
        }
        if let Some(t) = grant {
            let file: PolicyFile = toml::Value::Table(t.clone())
                .try_into()
                .map_err(|e| table_error(format!("`plugins.{plugin}` in the settings"), e))?;
            p.apply(file)
                .map_err(|message| PolicyError::Invalid { message })?;
        }
        Ok(p)
    }

    /// Apply a settings table on top of this policy.
    pub fn apply(&mut self, file: PolicyFile) -> Result<(), String> {
        let name = &self.plugin;
        if let Some(programs) = file.programs {
            for (logical, path) in &programs {
                if !path.is_absolute() {
                    return Err(format!(
                        "`plugins.{name}.programs.{logical}` must be an absolute path, not `{}`",
                        path.display()
                    ));
                }
            }
            self.programs = programs;
        }
        if let Some(dirs) = file.dirs {
            if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
                return Err(format!(
                    "`plugins.{name}.dirs` entries must be absolute, not `{}`",
                    d.display()
                ));
            }
            self.dirs = dirs;
        }
        if let Some(prefix) = file.kv_prefix {
            if prefix.is_empty() {
                return Err(format!("`plugins.{name}.kv_prefix` must not be empty"));
            }
            // The host's own records (the submission ledger, poll leases)
            // live under this namespace: no plugin may write into it.
            let host = crate::store::HOST_NAMESPACE;
            if prefix.starts_with(host) || host.starts_with(prefix.as_str()) {
                return Err(format!(
                    "`plugins.{name}.kv_prefix` = `{prefix}` overlaps `{host}`, where the host keeps its own records"
                ));
            }
            self.kv_prefix = prefix;
        }
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {$( if let Some(v) = file.$field { $target = v; } )*};
        }
        set! {
            env => self.env,
            program_env => self.program_env,
            supervise => self.supervise,
            k8s_namespaces => self.kube_namespaces,
            k8s_kinds => self.kube_kinds,
            k8s_service_accounts => self.kube_service_accounts,
            k8s_automount_token => self.kube_automount_token,
            output_bytes => self.limits.output_bytes,
            max_processes => self.limits.processes,
            max_runs_per_call => self.limits.runs_per_call,
        }
        if let Some(level) = file.k8s_pod_security {
            if level != "baseline" && level != "restricted" {
                return Err(format!(
                    "`plugins.{name}.k8s_pod_security` must be `baseline` or `restricted`, not `{level}`"
                ));
            }
            self.kube_pod_security = level;
        }
        if let Some(sha) = file.sha256 {
            self.sha256 = Some(sha.to_ascii_lowercase());
        }
        if let Some(mb) = file.memory_mb {
            self.limits.memory_bytes = mb
                .checked_mul(1 << 20)
                .ok_or_else(|| format!("`plugins.{name}.memory_mb` is too large: {mb}"))?;
        }
        let seconds = |key: &str, v: f64| match Duration::try_from_secs_f64(v) {
            Ok(d) if v > 0.0 && d <= MAX_SECONDS => Ok(d),
            _ => Err(format!(
                "`plugins.{name}.{key}` must be a positive number of seconds, at most {}, not `{v}`",
                MAX_SECONDS.as_secs()
            )),
        };
        for (key, value, target) in [
            ("kv_max_bytes", file.kv_max_bytes, &mut self.limits.kv_bytes),
            ("kv_max_keys", file.kv_max_keys, &mut self.limits.kv_keys),
        ] {
            if let Some(v) = value {
                if v > MAX_KV_QUOTA {
                    return Err(format!(
                        "`plugins.{name}.{key}` must be at most {MAX_KV_QUOTA}, not `{v}`"
                    ));
                }
                *target = v;
            }
        }
        if let Some(s) = file.cpu_seconds {
            self.limits.cpu_time = seconds("cpu_seconds", s)?;
        }
        if let Some(s) = file.wall_seconds {
            self.limits.wall_time = seconds("wall_seconds", s)?;
        }
        if let Some(s) = file.poll_seconds {
            if !(s.is_finite() && (MIN_POLL_SECONDS..=86_400.0).contains(&s)) {
                return Err(format!(
                    "`plugins.{name}.poll_seconds` must be between {MIN_POLL_SECONDS} and 86400 seconds, not `{s}`"
                ));
            }
            self.poll_seconds = Some(s);
        }
        for (k, v) in file.config {
            let v = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            self.config.insert(k, v);
        }
        Ok(())
    }

    /// Whether this policy grants a `ccat:hpc` interface (see [`crate::capabilities`]).
    pub fn grants(&self, interface: &str) -> bool {
        crate::capabilities::grants(self, interface)
    }

    /// The setting a site admin would change to grant an interface: the
    /// policy keys that grant it, after any setting the plugin's request
    /// fills them from (`K8S_NAMESPACE`).
    pub fn grant_hint(&self, interface: &str) -> String {
        let name = &self.plugin;
        let keys = match crate::capabilities::find(interface) {
            Some(c) if !c.grant_keys.is_empty() => c.grant_keys,
            _ => return format!("no setting grants `{interface}`"),
        };
        let vars: Vec<String> = keys
            .iter()
            .filter_map(|k| self.placeholders.get(*k))
            .flatten()
            .filter(|v| v.as_str() != "HPC_STATE_DIR" && v.as_str() != "HOSTNAME")
            .map(|v| format!("`{v}`"))
            .collect();
        let keys = keys
            .iter()
            .map(|k| format!("`plugins.{name}.{k}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        if vars.is_empty() {
            keys
        } else {
            format!("{}, or {keys}", vars.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str) -> Policy {
        let ph = crate::request::Placeholders::new(
            std::path::Path::new("/state"),
            Some("ccat"),
            Some("debug"),
        );
        let b = crate::builtin::find(name).unwrap();
        let r = Request::parse(b.policy, "built-in", true, &ph).unwrap();
        Policy::resolve(name, Some(&r), None).unwrap()
    }

    #[test]
    fn defaults_are_least_privilege() {
        let local = builtin("local");
        assert!(local.supervise && local.programs.is_empty() && local.kube_namespaces.is_empty());
        assert!(local.config.contains_key("HPC_NODE"));
        let slurm = builtin("slurm");
        assert_eq!(
            slurm.programs.keys().collect::<Vec<_>>(),
            ["sacct", "sbatch", "scancel", "squeue"]
        );
        assert!(slurm.programs.values().all(|p| p.is_absolute()));
        assert_eq!(slurm.dirs, [PathBuf::from("/state/slurm")]);
        assert_eq!(slurm.config["HPC_SLURM_WORKDIR"], "/state/slurm");
        assert_eq!(slurm.config["SLURM_PARTITION"], "debug");
        assert_eq!(slurm.env, ["HOME", "USER", "LOGNAME", "LANG", "SLURM_CONF"]);
        assert!(!slurm.supervise && slurm.grants("process") && !slurm.grants("kube"));
        let k8s = builtin("kubernetes");
        assert!(
            k8s.programs.is_empty() && k8s.kube_namespaces == ["ccat"] && !k8s.grants("process")
        );
        assert_eq!(k8s.kube_kinds, ["batch/Job", "Pod"]);
        assert_eq!(k8s.config["K8S_NAMESPACE"], "ccat");
        assert_eq!(
            k8s.grant_hint("kube"),
            "`K8S_NAMESPACE`, or `plugins.kubernetes.k8s_namespaces`"
        );
        let other = Policy::resolve("mysite", None, None).unwrap();
        assert!(!other.grants("process") && !other.grants("kube") && other.grants("kv"));
        assert_eq!(other.kv_prefix, "hpc-host:mysite:");
        assert_eq!(other.grant_hint("kube"), "`plugins.mysite.k8s_namespaces`");
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let mut p = builtin("slurm");
        let file: PolicyFile = toml::from_str(
            "programs = { sbatch = \"/opt/bin/sbatch\" }\nmemory_mb = 32\ncpu_seconds = 0.5\n[config]\nX = 3",
        )
        .unwrap();
        p.apply(file).unwrap();
        assert_eq!(p.programs.len(), 1);
        assert_eq!(p.limits.memory_bytes, 32 << 20);
        assert_eq!(p.limits.cpu_time, Duration::from_millis(500));
        assert_eq!(p.config["X"], "3");

        for huge in [
            "cpu_seconds = 1e300",
            "wall_seconds = inf",
            "cpu_seconds = nan",
        ] {
            let f: PolicyFile = toml::from_str(huge).unwrap();
            let e = p.apply(f).unwrap_err();
            assert!(e.contains("must be a positive number of seconds"), "{e}");
        }
        let f: PolicyFile = toml::from_str("kv_max_bytes = 1048576\nkv_max_keys = 10").unwrap();
        p.apply(f).unwrap();
        assert_eq!((p.limits.kv_bytes, p.limits.kv_keys), (1 << 20, 10));
        let f: PolicyFile = toml::from_str("kv_max_keys = 9223372036854775807").unwrap();
        let e = p.apply(f).unwrap_err();
        assert!(
            e.contains("`plugins.slurm.kv_max_keys` must be at most"),
            "{e}"
        );
        assert!(toml::from_str::<PolicyFile>("kv_max_bytes = -1").is_err());
        let f: PolicyFile = toml::from_str("memory_mb = 9223372036854775807").unwrap();
        assert!(p.apply(f).unwrap_err().contains("too large"));
        let bad: PolicyFile = toml::from_str("programs = { sbatch = \"sbatch\" }").unwrap();
        assert!(p.apply(bad).unwrap_err().contains("absolute"));
        assert!(
            toml::from_str::<PolicyFile>("programz = {}")
                .unwrap_err()
                .to_string()
                .contains("programz")
        );
    }

    #[test]
    fn no_kv_prefix_reaches_the_hosts_own_records() {
        // The ledger and the poll leases live under `hpc-host::`.
        for bad in ["hpc-host::", "hpc-host::submit:", "hpc-host:", "hpc-", "h"] {
            let mut p = builtin("local");
            let f: PolicyFile = toml::from_str(&format!("kv_prefix = \"{bad}\"")).unwrap();
            let e = p.apply(f).unwrap_err();
            assert!(e.contains("overlaps"), "{bad}: {e}");
        }
        let mut p = builtin("local");
        let f: PolicyFile = toml::from_str("kv_prefix = \"site:local:\"").unwrap();
        p.apply(f).unwrap();
        assert_eq!(p.kv_prefix, "site:local:");
    }

    #[test]
    fn poll_seconds_are_bounded() {
        let mut p = builtin("slurm");
        for bad in ["0", "0.001", "-1", "nan", "1e9"] {
            let f: PolicyFile = toml::from_str(&format!("poll_seconds = {bad}")).unwrap();
            assert!(p.apply(f).unwrap_err().contains("poll_seconds"), "{bad}");
        }
        let f: PolicyFile = toml::from_str("poll_seconds = 30").unwrap();
        p.apply(f).unwrap();
        assert_eq!(p.poll_seconds, Some(30.0));
    }
}
