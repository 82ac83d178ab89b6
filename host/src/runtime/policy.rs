//! What each plugin may do: the folders it may see, its limits, and each
//! capability's grant (programs, kv namespace, Kubernetes namespaces...).
//!
//! Every plugin starts from least privilege ([`Policy::least_privilege`]),
//! gets what its request may have ([`crate::runtime::request`]), and then the
//! `[default.plugins.<name>]` table in settings.toml adds to it: a list or
//! table key gains the settings' entries, a single value is the settings',
//! and a key the table's `replace` names is the settings' as is ([`layers`]).
//!
//! A table is flat (`programs`, `memory_mb`, `k8s_namespaces` side by side),
//! but each key belongs to one section: the host's own ([`HostSection`]:
//! folders, pin, poll interval, per-call limits) or one capability's
//! ([`crate::runtime::capabilities::Capability::Section`]). [`PolicyFile`] splits a
//! table by the sections' field names and parses each with its own
//! `deny_unknown_fields` struct; a key no section has is an error. (serde's
//! `flatten` would do the split, but it does not mix with
//! `deny_unknown_fields`.)

pub mod dirs;
pub mod layers;

use crate::runtime::capabilities::{self, Grants, Sections};
use crate::runtime::request::Request;
use layers::Layer;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The host's own limits on one plugin call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of the plugin instance.
    pub memory_bytes: usize,
    /// CPU time the plugin's own code may use per call (time spent waiting
    /// in host calls does not count).
    pub cpu_time: Duration,
    /// Wall-clock time of a whole call, host calls included.
    pub wall_time: Duration,
    /// Output kept from what a plugin reads through the host (a program's
    /// output per stream, a pod's log, a job's log).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            cpu_time: Duration::from_secs(10),
            wall_time: Duration::from_secs(120),
            output_bytes: 16 << 20,
        }
    }
}

/// The resolved policy of one plugin.
#[derive(Debug, Clone)]
pub struct Policy {
    pub plugin: String,
    /// Folders preopened read-write at their own paths.
    pub dirs: Vec<PathBuf>,
    /// Only a `.wasm` with this sha256 (hex) may load under this name.
    pub sha256: Option<String>,
    /// How often the daemon polls this backend for its open jobs, unless
    /// `HPC_POLL_SECONDS` says otherwise (`None`: the host's default).
    pub poll_seconds: Option<f64>,
    pub limits: Limits,
    /// Each capability's grant (`grants.process.programs`, `grants.kv.prefix`).
    pub grants: Grants,
    /// For each policy key, the settings its request's placeholders named
    /// (`k8s_namespaces` -> `K8S_NAMESPACE`): the hints of a refusal name them.
    pub placeholders: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Which layer (least privilege, request, settings) each part of this
    /// policy's `plugins inspect` view came from, in the same shape (see
    /// [`layers::provenance`]); set by [`Policy::resolve`], `null` before.
    pub provenance: Value,
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

/// The host's own keys of a policy table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// The keys whose settings value replaces the request's instead of
    /// adding to it (read by [`layers::replaced`]; settings only).
    pub replace: Option<Vec<String>>,
    pub dirs: Option<Vec<PathBuf>>,
    pub sha256: Option<String>,
    pub poll_seconds: Option<f64>,
    pub memory_mb: Option<usize>,
    pub cpu_seconds: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub output_bytes: Option<usize>,
}

/// A `[<env>.plugins.<name>]` table (or a policy request), split into the
/// host's section and each capability's. Every key is optional; a key no
/// section has is an error.
///
/// ```toml
/// [default.plugins.slurm]
/// programs = { sbatch = "/usr/bin/sbatch", squeue = "/usr/bin/squeue" }
/// dirs = ["/data/ccat/workspaces"]    # added to the plugin's own
/// env = ["SLURM_CONF"]
/// memory_mb = 64
/// max_runs_per_call = 16
/// kv_max_bytes = 16777216
/// kv_max_keys = 10000
/// [default.plugins.slurm.config]
/// HPC_SLURM_WORKDIR = "/data/ccat/workspaces"
/// ```
#[derive(Debug)]
pub struct PolicyFile {
    pub host: HostSection,
    pub capabilities: Sections,
}

impl PolicyFile {
    /// Split and parse a table; errors say what was wrong and where.
    pub fn parse(table: &toml::Table) -> Result<PolicyFile, String> {
        let mut rest = table.clone();
        let host = take_section::<HostSection>(&mut rest)?;
        let capabilities = Sections::take(&mut rest)?;
        if let Some(key) = rest.keys().next() {
            let mut known: Vec<&str> = section_keys::<HostSection>().to_vec();
            for c in capabilities::ALL {
                known.extend((c.keys)());
            }
            known.sort_unstable();
            return Err(format!(
                "unknown field `{key}`, expected one of {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(PolicyFile { host, capabilities })
    }
}

impl<'de> Deserialize<'de> for PolicyFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        PolicyFile::parse(&table).map_err(serde::de::Error::custom)
    }
}

/// Take a section's keys out of `table` and parse them into its struct.
pub fn take_section<S: DeserializeOwned>(table: &mut toml::Table) -> Result<S, String> {
    let mut mine = toml::Table::new();
    for key in section_keys::<S>() {
        if let Some(v) = table.remove(*key) {
            mine.insert((*key).to_owned(), v);
        }
    }
    toml::Value::Table(mine)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string().trim_end().to_owned())
}

/// The field names of a section struct, as its `Deserialize` impl declares
/// them (serde hands them to `deserialize_struct`): the one list of a
/// section's keys, so it cannot drift from the struct.
pub fn section_keys<S: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor, value::Error as E};
    struct Fields(Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = E;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, E> {
            Err(E::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, E> {
            self.0 = Some(fields);
            Err(E::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut f = Fields(None);
    let _ = S::deserialize(&mut f);
    f.0.unwrap_or(&[])
}

/// The shortest poll interval a policy may set.
pub const MIN_POLL_SECONDS: f64 = 0.05;

/// The longest time limit a policy may set (a year): far beyond any call,
/// and small enough that adding it to an instant never overflows.
pub const MAX_SECONDS: Duration = Duration::from_secs(365 * 24 * 3600);

impl Policy {
    /// The least-privilege policy every plugin starts from: a kv namespace of
    /// its own, the default limits, and nothing else. What a plugin needs
    /// beyond it comes from its request ([`crate::runtime::request`]) and the settings.
    pub fn least_privilege(plugin: &str) -> Policy {
        Policy {
            plugin: plugin.to_owned(),
            dirs: Vec::new(),
            sha256: None,
            poll_seconds: None,
            limits: Limits::default(),
            grants: Grants::least_privilege(plugin),
            placeholders: BTreeMap::new(),
            provenance: Value::Null,
        }
    }

    /// A plugin's policy: least privilege, then what its request may have
    /// (all of a built-in's; of a site plugin's, what needs no grant or what
    /// the settings grant), then the settings table, which adds to the
    /// request ([`layers::merge`]).
    pub fn resolve(
        plugin: &str,
        request: Option<&Request>,
        grant: Option<&toml::Table>,
    ) -> Result<Policy, PolicyError> {
        let invalid = |what: String| {
            move |e: String| PolicyError::Invalid {
                message: format!("{what}: {e}"),
            }
        };
        let in_settings = || format!("`plugins.{plugin}` in the settings");
        // The settings are checked first: what a site request is granted
        // depends on them.
        let replace = match grant {
            Some(t) => {
                PolicyFile::parse(t).map_err(invalid(in_settings()))?;
                layers::replaced(plugin, t).map_err(invalid(in_settings()))?
            }
            None => Vec::new(),
        };
        let least = Policy::least_privilege(plugin);
        let mut requested = least.clone();
        let mut asked = toml::Table::new();
        if let Some(r) = request {
            asked = r
                .granted(plugin, grant, &replace)
                .map_err(|message| PolicyError::NotGranted { message })?;
            let file = PolicyFile::parse(&asked)
                .map_err(invalid(format!("the policy request `{}`", r.origin)))?;
            requested
                .apply(file)
                .map_err(|message| PolicyError::Invalid { message })?;
            requested.placeholders = r.placeholders.clone();
        }
        let mut p = match grant {
            None => requested.clone(),
            Some(t) => {
                // The request was valid on its own: an error here is the settings'.
                let merged = PolicyFile::parse(&layers::merge(&asked, t, &replace))
                    .map_err(invalid(in_settings()))?;
                let mut p = least.clone();
                p.apply(merged)
                    .map_err(|message| PolicyError::Invalid { message })?;
                p.placeholders = requested.placeholders.clone();
                p
            }
        };
        let mut views = vec![
            (Layer::LeastPrivilege, capabilities::inspect(&least)),
            (Layer::Request, capabilities::inspect(&requested)),
        ];
        if grant.is_some() {
            views.push((Layer::Settings, capabilities::inspect(&p)));
        }
        p.provenance = layers::provenance(&views, &replace);
        Ok(p)
    }

    /// Set the keys a table names, each to the table's value (lists and
    /// tables included: [`Policy::resolve`] merges the layers before).
    pub fn apply(&mut self, file: PolicyFile) -> Result<(), String> {
        let name = &self.plugin;
        let host = file.host;
        if let Some(dirs) = host.dirs {
            if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
                return Err(format!(
                    "`plugins.{name}.dirs` entries must be absolute, not `{}`",
                    d.display()
                ));
            }
            self.dirs = dirs;
        }
        if let Some(sha) = host.sha256 {
            self.sha256 = Some(sha.to_ascii_lowercase());
        }
        if let Some(mb) = host.memory_mb {
            self.limits.memory_bytes = mb
                .checked_mul(1 << 20)
                .ok_or_else(|| format!("`plugins.{name}.memory_mb` is too large: {mb}"))?;
        }
        if let Some(n) = host.output_bytes {
            self.limits.output_bytes = n;
        }
        let seconds = |key: &str, v: f64| match Duration::try_from_secs_f64(v) {
            Ok(d) if v > 0.0 && d <= MAX_SECONDS => Ok(d),
            _ => Err(format!(
                "`plugins.{name}.{key}` must be a positive number of seconds, at most {}, not `{v}`",
                MAX_SECONDS.as_secs()
            )),
        };
        if let Some(s) = host.cpu_seconds {
            self.limits.cpu_time = seconds("cpu_seconds", s)?;
        }
        if let Some(s) = host.wall_seconds {
            self.limits.wall_time = seconds("wall_seconds", s)?;
        }
        if let Some(s) = host.poll_seconds {
            if !(s.is_finite() && (MIN_POLL_SECONDS..=86_400.0).contains(&s)) {
                return Err(format!(
                    "`plugins.{name}.poll_seconds` must be between {MIN_POLL_SECONDS} and 86400 seconds, not `{s}`"
                ));
            }
            self.poll_seconds = Some(s);
        }
        self.grants.apply(file.capabilities, name)
    }

    /// Every numeric limit by its policy key: the host's and each
    /// capability's (`plugins inspect` shows them under `limits`).
    pub fn limit_values(&self) -> Map<String, Value> {
        let l = &self.limits;
        let mut m = Map::new();
        m.insert("memory_mb".into(), json!(l.memory_bytes >> 20));
        m.insert("cpu_seconds".into(), json!(l.cpu_time.as_secs_f64()));
        m.insert("wall_seconds".into(), json!(l.wall_time.as_secs_f64()));
        m.insert("output_bytes".into(), json!(l.output_bytes));
        for c in capabilities::ALL {
            (c.limits)(self, &mut m);
        }
        m
    }

    /// Whether this policy grants a `ccat:hpc` interface (see [`crate::runtime::capabilities`]).
    pub fn grants(&self, interface: &str) -> bool {
        capabilities::grants(self, interface)
    }

    /// The setting a site admin would change to grant an interface: the
    /// policy keys that grant it, after any setting the plugin's request
    /// fills them from (`K8S_NAMESPACE`).
    pub fn grant_hint(&self, interface: &str) -> String {
        let name = &self.plugin;
        let keys = match crate::runtime::capabilities::find(interface) {
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
        let ph = crate::runtime::request::Placeholders::new(
            std::path::Path::new("/state"),
            Some("ccat"),
            Some("debug"),
        );
        let b = crate::runtime::builtin::find(name).unwrap();
        let r = Request::parse(b.policy, "built-in", true, &ph).unwrap();
        Policy::resolve(name, Some(&r), None).unwrap()
    }

    #[test]
    fn defaults_are_least_privilege() {
        let local = builtin("local");
        assert!(
            local.grants.process.supervise
                && local.grants.process.programs.is_empty()
                && local.grants.kube.namespaces.is_empty()
        );
        assert!(local.grants.config.contains_key("HPC_NODE"));
        let slurm = builtin("slurm");
        assert_eq!(
            slurm.grants.process.programs.keys().collect::<Vec<_>>(),
            ["sacct", "sbatch", "scancel", "squeue"]
        );
        assert!(
            slurm
                .grants
                .process
                .programs
                .values()
                .all(|p| p.is_absolute())
        );
        assert_eq!(slurm.dirs, [PathBuf::from("/state/slurm")]);
        assert_eq!(slurm.grants.config["HPC_SLURM_WORKDIR"], "/state/slurm");
        assert_eq!(slurm.grants.config["SLURM_PARTITION"], "debug");
        assert_eq!(
            slurm.grants.process.env,
            ["HOME", "USER", "LOGNAME", "LANG", "SLURM_CONF"]
        );
        assert!(
            !slurm.grants.process.supervise && slurm.grants("process") && !slurm.grants("kube")
        );
        let k8s = builtin("kubernetes");
        assert!(
            k8s.grants.process.programs.is_empty()
                && k8s.grants.kube.namespaces == ["ccat"]
                && !k8s.grants("process")
        );
        assert_eq!(k8s.grants.kube.kinds, ["batch/Job", "Pod"]);
        assert_eq!(k8s.grants.config["K8S_NAMESPACE"], "ccat");
        assert_eq!(
            k8s.grant_hint("kube"),
            "`K8S_NAMESPACE`, or `plugins.kubernetes.k8s_namespaces`"
        );
        let other = Policy::resolve("mysite", None, None).unwrap();
        assert!(!other.grants("process") && !other.grants("kube") && other.grants("kv"));
        assert_eq!(other.grants.kv.prefix, "hpc-host:mysite:");
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
        assert_eq!(p.grants.process.programs.len(), 1);
        assert_eq!(p.limits.memory_bytes, 32 << 20);
        assert_eq!(p.limits.cpu_time, Duration::from_millis(500));
        assert_eq!(p.grants.config["X"], "3");

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
        assert_eq!((p.grants.kv.max_bytes, p.grants.kv.max_keys), (1 << 20, 10));
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
    fn every_key_belongs_to_exactly_one_section() {
        let mut owner = std::collections::BTreeMap::new();
        for k in section_keys::<HostSection>() {
            owner.insert(*k, "host");
        }
        for c in capabilities::ALL {
            for k in (c.keys)() {
                let name = c.interface.unwrap_or("wasi");
                assert!(owner.insert(*k, name).is_none(), "`{k}` is in two sections");
            }
        }
        for (key, section) in [
            ("dirs", "host"),
            ("memory_mb", "host"),
            ("programs", "process"),
            ("max_runs_per_call", "process"),
            ("kv_prefix", "kv"),
            ("kv_max_keys", "kv"),
            ("k8s_namespaces", "kube"),
            ("config", "wasi"),
        ] {
            assert_eq!(owner.get(key), Some(&section), "{key}");
        }
        // One table with a key of every section lands in each.
        let f: PolicyFile = toml::from_str(
            "dirs = [\"/d\"]\nsupervise = true\nkv_max_keys = 5\nk8s_namespaces = [\"n\"]\n[config]\nA = 1",
        )
        .unwrap();
        let mut p = Policy::least_privilege("x");
        p.apply(f).unwrap();
        assert_eq!(p.dirs, [PathBuf::from("/d")]);
        assert!(p.grants.process.supervise && p.grants("process") && p.grants("kube"));
        assert_eq!(
            (p.grants.kv.max_keys, p.grants.config["A"].as_str()),
            (5, "1")
        );
        // A bad value names its key; an unknown key lists the known ones.
        let e = toml::from_str::<PolicyFile>("supervise = 3")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("supervise"), "{e}");
        let e = PolicyFile::parse(&"k8s_namespace = []".parse().unwrap())
            .err()
            .unwrap();
        assert!(
            e.contains("`k8s_namespace`") && e.contains("`k8s_namespaces`"),
            "{e}"
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
        assert_eq!(p.grants.kv.prefix, "site:local:");
    }

    #[test]
    fn max_running_jobs_defaults_to_the_cpus_at_least_8_and_is_bounded() {
        let cpus = std::thread::available_parallelism().unwrap().get().max(8);
        let mut p = builtin("local");
        assert_eq!(p.grants.process.running_jobs.get(), cpus);
        assert_eq!(p.limit_values()["max_running_jobs"], cpus);
        let f: PolicyFile = toml::from_str("max_running_jobs = 2").unwrap();
        p.apply(f).unwrap();
        assert_eq!(p.grants.process.running_jobs.get(), 2);
        for bad in ["0", "1025"] {
            let f: PolicyFile = toml::from_str(&format!("max_running_jobs = {bad}")).unwrap();
            let e = p.apply(f).unwrap_err();
            assert!(
                e.contains("`plugins.local.max_running_jobs` must be between 1 and 1024"),
                "{e}"
            );
        }
        assert!(toml::from_str::<PolicyFile>("max_running_jobs = -1").is_err());
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

    /// The built-in `name`'s policy under the settings table `settings`.
    fn with_settings(name: &str, settings: &str) -> Result<Policy, PolicyError> {
        let ph =
            crate::runtime::request::Placeholders::new(std::path::Path::new("/state"), None, None);
        let b = crate::runtime::builtin::find(name).unwrap();
        let r = Request::parse(b.policy, "built-in", true, &ph).unwrap();
        Policy::resolve(name, Some(&r), Some(&settings.parse().unwrap()))
    }

    #[test]
    fn settings_lists_add_to_a_builtins_request() {
        let p = with_settings(
            "slurm",
            "dirs = [\"/data/ccat/workspaces\"]\nenv = [\"TZ\", \"HOME\"]\nprogram_env = [\"SBATCH_*\"]",
        )
        .unwrap();
        assert_eq!(
            p.dirs,
            [
                PathBuf::from("/state/slurm"),
                PathBuf::from("/data/ccat/workspaces")
            ]
        );
        assert_eq!(
            p.grants.process.env,
            ["HOME", "USER", "LOGNAME", "LANG", "SLURM_CONF", "TZ"]
        );
        assert_eq!(p.grants.process.program_env, ["SBATCH_*"]);
        // An empty list adds nothing, and takes nothing away.
        let p = with_settings("slurm", "dirs = []").unwrap();
        assert_eq!(p.dirs, [PathBuf::from("/state/slurm")]);
        let p = with_settings("kubernetes", "k8s_kinds = [\"batch/CronJob\"]").unwrap();
        assert_eq!(p.grants.kube.kinds, ["batch/Job", "Pod", "batch/CronJob"]);
    }

    #[test]
    fn settings_tables_add_names_and_win_per_name() {
        let p = with_settings(
            "slurm",
            "programs = { sbatch = \"/opt/slurm/bin/sbatch\", sinfo = \"/usr/bin/sinfo\" }\n[config]\nHPC_SLURM_WORKDIR = \"/data\"\nX = \"1\"",
        )
        .unwrap();
        let programs = &p.grants.process.programs;
        assert_eq!(
            programs.keys().collect::<Vec<_>>(),
            ["sacct", "sbatch", "scancel", "sinfo", "squeue"]
        );
        assert_eq!(programs["sbatch"], PathBuf::from("/opt/slurm/bin/sbatch"));
        assert_eq!(p.grants.config["HPC_SLURM_WORKDIR"], "/data");
        assert_eq!(p.grants.config["X"], "1");
    }

    #[test]
    fn settings_single_values_win() {
        let p = with_settings(
            "local",
            "supervise = false\npoll_seconds = 2\nmemory_mb = 256\nkv_prefix = \"site:local:\"",
        )
        .unwrap();
        assert!(!p.grants.process.supervise);
        assert_eq!(p.poll_seconds, Some(2.0));
        assert_eq!(p.limits.memory_bytes, 256 << 20);
        assert_eq!(p.grants.kv.prefix, "site:local:");
    }

    #[test]
    fn replace_removes_only_what_it_names() {
        let p = with_settings(
            "slurm",
            "dirs = [\"/data\"]\nenv = [\"TZ\"]\nprograms = { sbatch = \"/x/sbatch\" }\nreplace = [\"dirs\", \"programs\"]",
        )
        .unwrap();
        assert_eq!(p.dirs, [PathBuf::from("/data")]);
        assert_eq!(
            p.grants.process.programs.keys().collect::<Vec<_>>(),
            ["sbatch"]
        );
        assert_eq!(p.grants.process.env.last().map(String::as_str), Some("TZ"));
        assert_eq!(p.grants.process.env.len(), 6, "not named: added to");
        let p = with_settings(
            "kubernetes",
            "k8s_kinds = [\"batch/Job\"]\nreplace = [\"k8s_kinds\"]",
        )
        .unwrap();
        assert_eq!(p.grants.kube.kinds, ["batch/Job"]);
        // Replacing with nothing is said with an empty value.
        let p = with_settings("slurm", "dirs = []\nreplace = [\"dirs\"]").unwrap();
        assert!(p.dirs.is_empty());
        for (bad, says) in [
            ("replace = [\"dirs\"]", "does not set"),
            ("memory_mb = 1\nreplace = [\"memory_mb\"]", "a single value"),
            ("replace = \"dirs\"", "replace"),
        ] {
            let e = with_settings("slurm", bad).unwrap_err().to_string();
            assert!(
                e.contains("plugins.slurm") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_site_plugin_gains_nothing_unlisted_through_the_merge() {
        let ph =
            crate::runtime::request::Placeholders::new(std::path::Path::new("/state"), None, None);
        let r = Request::parse(
            "dirs = [\"/data/site\"]\nsupervise = true\nmemory_mb = 64",
            "mysite.policy.toml",
            false,
            &ph,
        )
        .unwrap();
        let resolve =
            |settings: &str| Policy::resolve("mysite", Some(&r), Some(&settings.parse().unwrap()));
        // A settings value for another key grants nothing of this one.
        let e = resolve("supervise = true").unwrap_err().to_string();
        assert!(e.contains("plugins.mysite.dirs"), "{e}");
        // A list that leaves a requested entry out is refused, not merged in.
        let e = resolve("supervise = true\ndirs = [\"/other\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`/data/site` in `dirs`"), "{e}");
        // Listed: granted, and the settings' other entries added.
        let p = resolve("supervise = true\ndirs = [\"/other\", \"/data/site\"]").unwrap();
        assert_eq!(
            p.dirs,
            [PathBuf::from("/data/site"), PathBuf::from("/other")]
        );
        assert_eq!(
            p.limits.memory_bytes,
            64 << 20,
            "below the default: no grant needed"
        );
        assert_eq!(p.provenance["dirs"]["/data/site"], "request");
        assert_eq!(p.provenance["dirs"]["/other"], "settings");
        // Replaced: exactly the settings' list.
        let p = resolve("supervise = true\ndirs = [\"/other\"]\nreplace = [\"dirs\"]").unwrap();
        assert_eq!(p.dirs, [PathBuf::from("/other")]);
    }

    #[test]
    fn provenance_follows_the_inspect_view() {
        let p = with_settings("slurm", "dirs = [\"/extra\"]\nmemory_mb = 64").unwrap();
        let view = crate::runtime::capabilities::inspect(&p);
        let from = &p.provenance;
        // Every key of the view has its provenance, in the same shape.
        for (key, value) in view.as_object().unwrap() {
            match value {
                Value::Array(items) => {
                    assert_eq!(items.len(), from[key].as_object().unwrap().len(), "{key}")
                }
                Value::Object(m) => assert_eq!(
                    m.keys().collect::<Vec<_>>(),
                    from[key].as_object().unwrap().keys().collect::<Vec<_>>(),
                    "{key}"
                ),
                _ => assert!(from[key].is_string(), "{key}"),
            }
        }
        assert_eq!(from["dirs"]["/state/slurm"], "request");
        assert_eq!(from["dirs"]["/extra"], "settings");
        assert_eq!(from["programs"]["sbatch"], "request");
        assert_eq!(from["poll_seconds"], "request");
        assert_eq!(from["supervise"], "least-privilege");
        assert_eq!(from["limits"]["memory_mb"], "settings");
        assert_eq!(from["limits"]["cpu_seconds"], "least-privilege");
        assert_eq!(from["config"]["HPC_SLURM_WORKDIR"], "request");
        // No settings table: least privilege and the request only.
        assert_eq!(builtin("local").provenance["supervise"], "request");
    }
}
