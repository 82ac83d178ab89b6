//! What each plugin may do: the programs it may run, the folders it may see,
//! its kv prefix, its Kubernetes namespaces and kinds, and its limits.
//!
//! Built-in plugins start from least-privilege defaults ([`Policy::default_for`]);
//! a `[default.plugins.<name>]` table in settings.toml overrides them key by key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    pub limits: Limits,
    /// Passed to the plugin through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
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
    pub memory_mb: Option<usize>,
    pub cpu_seconds: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub output_bytes: Option<usize>,
    pub max_processes: Option<usize>,
    pub max_runs_per_call: Option<usize>,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// Where the host looks for a program that a default policy names.
const PROGRAM_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin", "/opt/slurm/bin"];

fn find_program(name: &str) -> PathBuf {
    PROGRAM_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(name))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// What the host knows when it resolves policies.
pub struct PolicyContext<'a> {
    pub state_dir: &'a Path,
    pub slurm_partition: Option<&'a str>,
    pub k8s_namespace: Option<&'a str>,
}

impl Policy {
    /// The least-privilege default of a plugin: built-ins get what their job
    /// needs; any other plugin gets a kv namespace of its own and nothing else.
    pub fn default_for(plugin: &str, cx: &PolicyContext<'_>) -> Policy {
        let mut p = Policy {
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
            limits: Limits::default(),
            config: BTreeMap::new(),
        };
        match plugin {
            "local" => {
                p.supervise = true;
                // Job records may live in a Redis shared by several login
                // nodes; the plugin notes which one runs each job.
                p.config.insert("HPC_NODE".into(), hostname());
            }
            "slurm" => {
                for prog in ["sbatch", "squeue", "sacct", "scancel"] {
                    p.programs.insert(prog.to_owned(), find_program(prog));
                }
                let workdir = cx.state_dir.join("slurm");
                p.dirs.push(workdir.clone());
                // A batch job inherits sbatch's environment: give it the
                // user's identity and locale, and the site's SLURM_CONF.
                p.env = ["HOME", "USER", "LOGNAME", "LANG", "SLURM_CONF"]
                    .map(String::from)
                    .to_vec();
                p.config
                    .insert("HPC_SLURM_WORKDIR".into(), workdir.display().to_string());
                if let Some(part) = cx.slurm_partition {
                    p.config.insert("SLURM_PARTITION".into(), part.to_owned());
                }
            }
            "kubernetes" => {
                p.kube_namespaces
                    .extend(cx.k8s_namespace.map(str::to_owned));
                p.kube_kinds = vec!["batch/Job".into(), "Pod".into()];
                if let Some(ns) = cx.k8s_namespace {
                    p.config.insert("K8S_NAMESPACE".into(), ns.to_owned());
                }
            }
            _ => {}
        }
        p
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
            self.limits.memory_bytes = mb << 20;
        }
        let seconds = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!(
                    "`plugins.{name}.{key}` must be a positive number of seconds"
                ))
            }
        };
        if let Some(s) = file.cpu_seconds {
            self.limits.cpu_time = seconds("cpu_seconds", s)?;
        }
        if let Some(s) = file.wall_seconds {
            self.limits.wall_time = seconds("wall_seconds", s)?;
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

    /// The host interfaces this policy grants, by WIT interface name.
    pub fn grants(&self, interface: &str) -> bool {
        match interface {
            "process" => self.supervise || !self.programs.is_empty(),
            "kube" => !self.kube_namespaces.is_empty(),
            "kv" | "types" => true,
            _ => false,
        }
    }

    /// The setting a site admin would change to grant an interface.
    pub fn grant_hint(&self, interface: &str) -> String {
        let name = &self.plugin;
        match interface {
            "process" => format!("`plugins.{name}.programs` or `plugins.{name}.supervise`"),
            "kube" if name == "kubernetes" => {
                format!("`K8S_NAMESPACE`, or `plugins.{name}.k8s_namespaces`")
            }
            "kube" => format!("`plugins.{name}.k8s_namespaces`"),
            other => format!("no setting grants `{other}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> PolicyContext<'static> {
        PolicyContext {
            state_dir: Path::new("/state"),
            slurm_partition: Some("debug"),
            k8s_namespace: Some("ccat"),
        }
    }

    #[test]
    fn defaults_are_least_privilege() {
        let local = Policy::default_for("local", &cx());
        assert!(local.supervise && local.programs.is_empty() && local.kube_namespaces.is_empty());
        let slurm = Policy::default_for("slurm", &cx());
        assert_eq!(
            slurm.programs.keys().collect::<Vec<_>>(),
            ["sacct", "sbatch", "scancel", "squeue"]
        );
        assert!(!slurm.supervise && slurm.grants("process") && !slurm.grants("kube"));
        let k8s = Policy::default_for("kubernetes", &cx());
        assert!(
            k8s.programs.is_empty() && k8s.kube_namespaces == ["ccat"] && !k8s.grants("process")
        );
        let other = Policy::default_for("mysite", &cx());
        assert!(!other.grants("process") && !other.grants("kube") && other.grants("kv"));
        assert_eq!(other.kv_prefix, "hpc-host:mysite:");
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let mut p = Policy::default_for("slurm", &cx());
        let file: PolicyFile = toml::from_str(
            "programs = { sbatch = \"/opt/bin/sbatch\" }\nmemory_mb = 32\ncpu_seconds = 0.5\n[config]\nX = 3",
        )
        .unwrap();
        p.apply(file).unwrap();
        assert_eq!(p.programs.len(), 1);
        assert_eq!(p.limits.memory_bytes, 32 << 20);
        assert_eq!(p.limits.cpu_time, Duration::from_millis(500));
        assert_eq!(p.config["X"], "3");

        let bad: PolicyFile = toml::from_str("programs = { sbatch = \"sbatch\" }").unwrap();
        assert!(p.apply(bad).unwrap_err().contains("absolute"));
        assert!(
            toml::from_str::<PolicyFile>("programz = {}")
                .unwrap_err()
                .to_string()
                .contains("programz")
        );
    }
}
