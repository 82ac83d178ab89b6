//! Settings, read the way the workflow manager's Dynaconf reads them.
//!
//! ```toml
//! [default]
//! HPC_BACKEND = "local"          # the plugin to use: built-in or <plugins dir>/<name>.wasm
//! SLURM_PARTITION = "debug"
//! K8S_NAMESPACE = "ccat"
//! HPC_REDIS_URL = "redis://127.0.0.1:6379/0"   # unset: the embedded store
//! HPC_PLUGINS_DIR = "/opt/hpc-host/plugins"
//! HPC_STATE_DIR = "/var/lib/hpc-host"
//!
//! [default.plugins.slurm]        # a plugin's policy (see `policy`)
//! dirs = ["/data/ccat"]          # added to the plugin's own folders
//!
//! [production]
//! HPC_BACKEND = "slurm"
//! ```
//!
//! The environment (`--env`, else `ENV_FOR_DYNACONF`, else `development`)
//! picks a table that is merged over `[default]` (tables deep-merged, other
//! values replaced). Then any `CCAT_WORKFLOW_MANAGER_<KEY>` variable overrides
//! `<KEY>`; its value is read as TOML when it parses (`8`, `true`, `["a"]`),
//! else taken as a string; `__` reaches into tables
//! (`CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__MEMORY_MB=64`). Command-line flags
//! win over everything. Top-level keys are case-insensitive; keys the host does
//! not use are left to the workflow manager.
//!
//! The layering is [`figment`]'s: the file's `[default]` table, the
//! environment's table and then each variable are layers merged in that
//! order, and every value remembers its layer, so an error names the file or
//! the variable a bad value came from. Reading the inputs stays ours, as
//! Dynaconf reads them: a `Layer` is a table parsed by the `toml` crate.
//! figment's own `Toml` provider would bring `toml` 0.8 beside our 0.9 and make
//! `[global]` a profile over every environment, and its `Env` reads only the
//! process environment, lower-cases keys and parses values with its own syntax,
//! not TOML. Profiles are not used either: a variable *replaces* a table it
//! names, which `merge_var` gets from figment's merge only within one profile.
//!
//! One difference from the hand-written merge this replaced: figment sees a
//! TOML datetime as a table, so a key that is a datetime in `[default]` and a
//! table in the environment's table stays a datetime.

use crate::runtime::error::HostError;
use crate::runtime::policy::{Policy, PolicyError};
use crate::runtime::request::{Placeholders, Request};
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub mod daemon;

/// The prefix of environment overrides, as the workflow manager's Dynaconf uses it.
pub const ENV_PREFIX: &str = "CCAT_WORKFLOW_MANAGER_";

/// Command-line choices that take precedence over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub env: Option<String>,
    pub backend: Option<String>,
}

/// The resolved settings of one invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The settings file read, if any.
    pub file: Option<PathBuf>,
    /// The Dynaconf environment in force.
    pub env: String,
    pub backend: String,
    pub slurm_partition: Option<String>,
    pub k8s_namespace: Option<String>,
    pub redis_url: Option<String>,
    pub plugins_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// The daemon's socket, `HPC_DAEMON` and poll intervals (service mode's).
    pub daemon: daemon::DaemonSettings,
    plugin_tables: BTreeMap<String, toml::Value>,
    /// Where each plugin table's values came from, for errors.
    plugin_sources: BTreeMap<String, String>,
}

impl Settings {
    /// Read the settings file and the process environment.
    pub fn load(o: &Overrides) -> Result<Settings, HostError> {
        Self::resolve(o, &std::env::vars().collect::<Vec<_>>())
    }

    /// Resolve settings from explicit inputs (the environment as a list, for tests).
    pub fn resolve(o: &Overrides, vars: &[(String, String)]) -> Result<Settings, HostError> {
        let var = |k: &str| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let home = var("HOME").map(PathBuf::from);
        let xdg = |key: &str, fallback: &str| -> Option<PathBuf> {
            var(key)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(fallback)))
        };

        let explicit = o
            .config
            .clone()
            .or_else(|| var("HPC_HOST_CONFIG").map(PathBuf::from))
            .or_else(|| var("SETTINGS_FILE_FOR_DYNACONF").map(PathBuf::from));
        let file = match explicit {
            Some(p) => Some(p),
            None => xdg("XDG_CONFIG_HOME", ".config")
                .map(|d| d.join("hpc-host/settings.toml"))
                .filter(|p| p.is_file()),
        };
        let env = o
            .env
            .clone()
            .or_else(|| var("ENV_FOR_DYNACONF"))
            .unwrap_or_else(|| "development".into());

        let mut figment = Figment::new();
        if let Some(path) = &file {
            let root = read_file(path)?;
            for name in ["default", &env] {
                let source = format!("the settings file `{}`", path.display());
                let table = env_table(&root, name)?;
                figment = figment.merge(Layer { source, table });
            }
        }
        for (name, value) in vars {
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                figment = merge_var(figment, name, key, value)?;
            }
        }
        let layered = figment
            .find_value("")
            .map_err(|e| HostError::settings_caused("the settings cannot be merged", e))?;
        let merged: toml::Table = layered
            .deserialize()
            .map_err(|e| HostError::settings_caused("the merged settings are not a table", e))?;
        let layered = layered.into_dict().unwrap_or_default();

        let string = |key: &str| -> Result<Option<String>, HostError> {
            match merged.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(HostError::settings(format!(
                    "`{key}` must be a string, not `{other}` (from {})",
                    layered
                        .get(key)
                        .map(|v| sources(&figment, v))
                        .unwrap_or_default()
                ))),
            }
        };
        let dir = |key: &str, xdg_key: &str, fallback: &str| -> Result<PathBuf, HostError> {
            string(key)?
                .map(PathBuf::from)
                .or_else(|| xdg(xdg_key, fallback).map(|d| d.join("hpc-host")))
                .ok_or_else(|| {
                    HostError::settings(format!(
                        "`{key}` is not set and there is no `HOME` to default it from"
                    ))
                })
        };
        let state_dir = dir("HPC_STATE_DIR", "XDG_STATE_HOME", ".local/state")?;
        let backend = match &o.backend {
            Some(b) => b.clone(),
            None => string("HPC_BACKEND")?.unwrap_or_else(|| "local".into()),
        };
        check_plugin_name(&backend)?;
        let plugin_tables = match merged.get("PLUGINS") {
            None => BTreeMap::new(),
            Some(toml::Value::Table(t)) => plugin_tables(t)?,
            Some(_) => {
                return Err(HostError::settings(
                    "`plugins` must be a table of plugin tables",
                ));
            }
        };
        let plugin_sources = match layered.get("PLUGINS") {
            Some(Value::Dict(_, d)) => d
                .iter()
                .map(|(name, t)| (name.to_ascii_lowercase(), sources(&figment, t)))
                .collect(),
            _ => BTreeMap::new(),
        };
        let settings = Settings {
            file,
            env,
            backend: backend.to_ascii_lowercase(),
            slurm_partition: string("SLURM_PARTITION")?,
            k8s_namespace: string("K8S_NAMESPACE")?,
            redis_url: match string("HPC_REDIS_URL")? {
                Some(url) => {
                    let allow = match merged.get("HPC_REDIS_ALLOW_UNAUTHENTICATED") {
                        None => false,
                        Some(toml::Value::Boolean(b)) => *b,
                        Some(toml::Value::String(s)) if s == "true" || s == "1" => true,
                        Some(toml::Value::String(s))
                            if s == "false" || s == "0" || s.is_empty() =>
                        {
                            false
                        }
                        Some(other) => {
                            return Err(HostError::settings(format!(
                                "`HPC_REDIS_ALLOW_UNAUTHENTICATED` must be true or false, not `{other}`"
                            )));
                        }
                    };
                    crate::store::check_redis_url(&url, allow).map_err(HostError::settings)?;
                    Some(url)
                }
                None => None,
            },
            plugins_dir: match string("HPC_PLUGINS_DIR")? {
                Some(d) => PathBuf::from(d),
                None => dir("HPC_DATA_DIR", "XDG_DATA_HOME", ".local/share")?.join("plugins"),
            },
            cache_dir: dir("HPC_CACHE_DIR", "XDG_CACHE_HOME", ".cache")?,
            daemon: daemon::DaemonSettings::from_merged(
                &merged,
                &state_dir,
                var("XDG_RUNTIME_DIR"),
            )?,
            state_dir,
            plugin_tables,
            plugin_sources,
        };
        settings.check_plugin_tables()?;
        Ok(settings)
    }

    /// A table for a plugin that is neither built in nor a file in the
    /// plugins folder is a typo that would silently grant nothing: refuse it.
    fn check_plugin_tables(&self) -> Result<(), HostError> {
        for name in self.plugin_tables.keys() {
            if crate::runtime::builtin::find(name).is_none() && !self.plugin_path(name).is_file() {
                return Err(HostError::settings(format!(
                    "`[plugins.{name}]` in the settings names no plugin: `{name}` is not built in and there is no `{}`",
                    self.plugin_path(name).display()
                )));
            }
        }
        Ok(())
    }

    /// The values a policy request's `${...}` placeholders stand for.
    pub fn placeholders(&self) -> Placeholders {
        let mut p = Placeholders::new(
            &self.state_dir,
            self.k8s_namespace.as_deref(),
            self.slurm_partition.as_deref(),
        );
        p.set(
            daemon::PUSH_ADDRESS,
            self.daemon.push_address.map(|a| a.to_string()),
        );
        p
    }

    /// The request a built-in plugin ships with, if `plugin` is one.
    pub fn builtin_request(&self, plugin: &str) -> Result<Option<Request>, HostError> {
        crate::runtime::builtin::find(plugin)
            .map(|b| Request::parse(b.policy, "built-in", true, &self.placeholders()))
            .transpose()
            .map_err(HostError::settings)
    }

    /// The policy of a plugin under its built-in request, if it has one.
    pub fn policy(&self, plugin: &str) -> Result<Policy, HostError> {
        self.policy_with(plugin, self.builtin_request(plugin)?.as_ref())
    }

    /// The policy of a plugin: least privilege, what its request may have,
    /// then its settings table, which adds to the request (see
    /// [`crate::runtime::policy::layers`]).
    pub fn policy_with(
        &self,
        plugin: &str,
        request: Option<&Request>,
    ) -> Result<Policy, HostError> {
        let grant = match self.plugin_tables.get(plugin) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                return Err(HostError::settings(format!(
                    "`plugins.{plugin}` in the settings must be a table"
                )));
            }
        };
        Policy::resolve(plugin, request, grant).map_err(|e| match e {
            PolicyError::Invalid { message } => {
                HostError::settings(format!("{message} (from {})", self.plugin_source(plugin)))
            }
            PolicyError::NotGranted { message } => HostError::PluginDenied {
                plugin: plugin.to_owned(),
                message: crate::runtime::capabilities::denied(plugin, "request", "policy", message),
            },
        })
    }

    /// Where a plugin's settings table came from, for errors.
    fn plugin_source(&self, plugin: &str) -> &str {
        self.plugin_sources
            .get(plugin)
            .map_or("the policy request", String::as_str)
    }

    /// The folders a plugin's default policy names (the host makes them).
    pub fn default_dirs(&self, plugin: &str) -> Vec<PathBuf> {
        let Ok(Some(request)) = self.builtin_request(plugin) else {
            return Vec::new();
        };
        request
            .table
            .get("dirs")
            .and_then(toml::Value::as_array)
            .map(|dirs| {
                dirs.iter()
                    .filter_map(|d| d.as_str())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where a site's plugin file of this name would be.
    pub fn plugin_path(&self, name: &str) -> PathBuf {
        self.plugins_dir.join(format!("{name}.wasm"))
    }
}

/// Plugin names become file names: keep them plain.
pub fn check_plugin_name(name: &str) -> Result<(), HostError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(HostError::settings(format!(
            "`{name}` is not a valid plugin name (letters, digits, `-` and `_`, at most 64)"
        )))
    }
}

/// Plugin names are case-insensitive and used lower-case (as file names and
/// policy keys): `[plugins.Slurm]` is the table of `slurm`. Two tables that
/// differ only in case are ambiguous, so an error.
fn plugin_tables(t: &toml::Table) -> Result<BTreeMap<String, toml::Value>, HostError> {
    let mut out = BTreeMap::new();
    for (k, v) in t {
        let name = k.to_ascii_lowercase();
        if out.insert(name.clone(), v.clone()).is_some() {
            return Err(HostError::settings(format!(
                "`plugins.{k}` and another table name the same plugin `{name}`: plugin names are case-insensitive, keep one"
            )));
        }
    }
    Ok(out)
}

/// One layer of settings for figment, named the way errors name where a
/// value came from.
struct Layer {
    source: String,
    table: toml::Table,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.source.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.table).data()
    }
}

fn read_file(path: &Path) -> Result<toml::Table, HostError> {
    // The settings grant plugins programs, folders and secrets: a file
    // another user could write is not this user's settings.
    if std::fs::symlink_metadata(path).is_ok() {
        crate::sys::fsperm::check_trusted_file(path)
            .map_err(|e| HostError::settings(format!("the settings file is not trusted: {e}")))?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        HostError::settings_caused(format!("cannot read settings file `{}`", path.display()), e)
    })?;
    text.parse().map_err(|e| {
        HostError::settings_caused(
            format!("settings file `{}` is not valid TOML", path.display()),
            e,
        )
    })
}

/// The file's table for an environment, its name and keys case-insensitive
/// (the keys are used upper-case). Other top-level keys are not ours.
fn env_table(root: &toml::Table, name: &str) -> Result<toml::Table, HostError> {
    match root.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        None => Ok(toml::Table::new()),
        Some((_, toml::Value::Table(t))) => Ok(t
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect()),
        Some((k, _)) => Err(HostError::settings(format!(
            "`[{k}]` in the settings file must be a table"
        ))),
    }
}

/// Merge the variable `name` (`ENV_PREFIX` + `key`) over `figment`.
fn merge_var(figment: Figment, name: &str, key: &str, raw: &str) -> Result<Figment, HostError> {
    let path = env_path(key);
    let current: toml::Table = figment.extract().map_err(|e| {
        HostError::settings_caused(
            format!("`{name}`: the settings before it cannot be merged"),
            e,
        )
    })?;
    if passes_a_non_table(&current, &path) {
        return Err(HostError::settings(format!(
            "`{name}`: reaches into a value that is not a table"
        )));
    }
    let layer = |value| Layer {
        source: format!("the environment variable `{name}`"),
        table: nest(&path, value),
    };
    // A variable replaces what it names, as in Dynaconf (`PROGRAMS = { sbatch
    // = … }` grants that program only), but figment merges a table into a
    // table: a value that is not a table goes first, and the merge replaces it.
    Ok(figment
        .merge(layer(toml::Value::Boolean(false)))
        .merge(layer(parse_env_value(raw))))
}

/// A variable's key as a path: `PLUGINS__SLURM__CONFIG__Key` is
/// `PLUGINS`, `slurm`, `config`, `Key`. Top-level keys are upper-case,
/// plugin names and policy keys lower-case, and the keys of a plugin's
/// `config` table are the plugin's own and keep their case.
fn env_path(key: &str) -> Vec<String> {
    let mut parts = key.split("__");
    let top = parts.next().unwrap_or_default().to_ascii_uppercase();
    let mut in_config = false;
    let rest = parts.map(|seg| {
        let key = if in_config {
            seg.to_owned()
        } else {
            seg.to_ascii_lowercase()
        };
        in_config |= seg.eq_ignore_ascii_case("config");
        key
    });
    std::iter::once(top).chain(rest).collect()
}

/// `value` at `path`, in tables made for the purpose.
fn nest(path: &[String], value: toml::Value) -> toml::Table {
    let mut table = toml::Table::new();
    if let Some((top, rest)) = path.split_first() {
        let value = rest.iter().rev().fold(value, |v, k| {
            toml::Value::Table(toml::Table::from_iter([(k.clone(), v)]))
        });
        table.insert(top.clone(), value);
    }
    table
}

/// Whether a value on the way to `path`'s last key is not a table: a
/// variable cannot reach into it.
fn passes_a_non_table(root: &toml::Table, path: &[String]) -> bool {
    let Some((_, parents)) = path.split_last() else {
        return false;
    };
    let mut table = root;
    for key in parents {
        match table.get(key) {
            None => return false,
            Some(toml::Value::Table(t)) => table = t,
            Some(_) => return true,
        }
    }
    false
}

/// Dynaconf reads `8` as an integer and `hello` as a string: TOML when it
/// parses. This is Dynaconf's own method (`parse_with_toml`: the value is
/// parsed as `key=<value>`), which `toml::Value::from_str` is not: it
/// refuses ` 8 ` and `8 # comment`, which Dynaconf reads as `8`.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Where `value` and everything in it came from, in the order the layers were
/// merged: "the environment variable `…` or the settings file `…`".
fn sources(figment: &Figment, value: &Value) -> String {
    let (mut tags, mut todo) = (BTreeSet::new(), vec![value]);
    while let Some(v) = todo.pop() {
        tags.insert(v.tag());
        match v {
            Value::Dict(_, d) => todo.extend(d.values()),
            Value::Array(_, a) => todo.extend(a),
            _ => {}
        }
    }
    let mut names: Vec<&str> = tags
        .into_iter()
        .filter_map(|t| Some(figment.get_metadata(t)?.name.as_ref()))
        .collect();
    names.dedup();
    names.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn write(text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("hpc-host-settings-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn no_file_means_local_on_the_embedded_store() {
        let s = Settings::resolve(&Overrides::default(), &vars(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(s.backend, "local");
        assert_eq!(s.redis_url, None);
        assert_eq!(s.state_dir, Path::new("/home/u/.local/state/hpc-host"));
        assert_eq!(
            s.plugins_dir,
            Path::new("/home/u/.local/share/hpc-host/plugins")
        );
        assert_eq!(s.cache_dir, Path::new("/home/u/.cache/hpc-host"));
    }

    #[test]
    fn push_address_reaches_the_slurm_plugin_checked_or_is_refused() {
        let home = ("HOME", "/home/u");
        let s = Settings::resolve(&Overrides::default(), &vars(&[home])).unwrap();
        assert_eq!(s.daemon.push_address, None);
        let slurm = s.policy("slurm").unwrap();
        assert!(!slurm.grants.config.contains_key("HPC_PUSH_ADDRESS"));
        let set = ("CCAT_WORKFLOW_MANAGER_HPC_PUSH_ADDRESS", "127.0.0.1:7878");
        let s = Settings::resolve(&Overrides::default(), &vars(&[home, set])).unwrap();
        assert_eq!(
            s.daemon.push_address,
            Some("127.0.0.1:7878".parse().unwrap())
        );
        let slurm = s.policy("slurm").unwrap();
        assert_eq!(slurm.grants.config["HPC_PUSH_ADDRESS"], "127.0.0.1:7878");
        let local = s.policy("local").unwrap();
        assert!(!local.grants.config.contains_key("HPC_PUSH_ADDRESS"));
        for bad in ["login1:7878", "127.0.0.1:7878; id", "0.0.0.0:1"] {
            let set = ("CCAT_WORKFLOW_MANAGER_HPC_PUSH_ADDRESS", bad);
            let Err(e) = Settings::resolve(&Overrides::default(), &vars(&[home, set])) else {
                panic!("{bad} accepted")
            };
            assert!(e.to_string().contains("`HPC_PUSH_ADDRESS` must be"), "{e}");
        }
        // Set straight in a plugin's config table: checked the same.
        let set = (
            "CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__CONFIG__HPC_PUSH_ADDRESS",
            "x'; id; '",
        );
        let s = Settings::resolve(&Overrides::default(), &vars(&[home, set])).unwrap();
        let e = s.policy("slurm").unwrap_err().to_string();
        assert!(e.contains("plugins.slurm.config.HPC_PUSH_ADDRESS"), "{e}");
    }

    #[test]
    fn environments_merge_over_default_and_env_vars_win() {
        let f = write(
            "[default]\nhpc_backend = \"local\"\nSLURM_PARTITION = \"debug\"\n[default.plugins.slurm]\nmemory_mb = 32\n\
             [production]\nHPC_BACKEND = \"slurm\"\n[production.plugins.slurm]\ncpu_seconds = 2\n",
        );
        let o = Overrides {
            config: Some(f.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(
            &o,
            &vars(&[("HOME", "/h"), ("ENV_FOR_DYNACONF", "production")]),
        )
        .unwrap();
        assert_eq!(s.backend, "slurm");
        assert_eq!(s.slurm_partition.as_deref(), Some("debug"));
        let p = s.policy("slurm").unwrap();
        assert_eq!(p.limits.memory_bytes, 32 << 20, "default table kept");
        assert_eq!(p.limits.cpu_time.as_secs(), 2, "environment table merged");

        let env = vars(&[
            ("HOME", "/h"),
            ("ENV_FOR_DYNACONF", "production"),
            ("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "local"),
            ("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__MEMORY_MB", "64"),
            (
                "CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__CONFIG__SLURM_COMMAND_TIMEOUT_MS",
                "5000",
            ),
        ]);
        let s = Settings::resolve(&o, &env).unwrap();
        assert_eq!(s.backend, "local");
        assert_eq!(s.policy("slurm").unwrap().limits.memory_bytes, 64 << 20);
        assert_eq!(
            s.policy("slurm").unwrap().grants.config["SLURM_COMMAND_TIMEOUT_MS"],
            "5000",
            "config keys keep their case"
        );

        let cli = Overrides {
            config: Some(f),
            env: Some("default".into()),
            backend: Some("slurm".into()),
        };
        assert_eq!(Settings::resolve(&cli, &env).unwrap().backend, "slurm");
    }

    #[test]
    fn bad_settings_are_named() {
        let f = write("[default.plugins.local]\nsupervize = true\n");
        let o = Overrides {
            config: Some(f),
            ..Default::default()
        };
        let s = Settings::resolve(&o, &vars(&[("HOME", "/h")])).unwrap();
        let e = s.policy("local").unwrap_err().to_string();
        assert!(
            e.contains("plugins.local") && e.contains("supervize"),
            "{e}"
        );

        let f = write("[default\n");
        let o = Overrides {
            config: Some(f),
            ..Default::default()
        };
        assert!(
            Settings::resolve(&o, &vars(&[]))
                .unwrap_err()
                .to_string()
                .contains("not valid TOML")
        );

        let o = Overrides {
            backend: Some("../evil".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(&o, &vars(&[("HOME", "/h")])).is_err());
        let o = Overrides {
            config: Some("/nonexistent/settings.toml".into()),
            ..Default::default()
        };
        assert!(
            Settings::resolve(&o, &vars(&[]))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn plugin_tables_are_case_insensitive_and_must_name_a_plugin() {
        let o = |text: &str| Overrides {
            config: Some(write(text)),
            ..Default::default()
        };
        let h = vars(&[("HOME", "/nonexistent-home")]);
        let s = Settings::resolve(&o("[default.plugins.Slurm]\nmemory_mb = 32\n"), &h).unwrap();
        assert_eq!(s.policy("slurm").unwrap().limits.memory_bytes, 32 << 20);

        let e = Settings::resolve(&o("[default.plugins.slurmm]\nmemory_mb = 32\n"), &h)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`[plugins.slurmm]`") && e.contains("names no plugin"),
            "{e}"
        );

        let e = Settings::resolve(
            &o("[default.plugins.slurm]\nmemory_mb = 1\n[default.plugins.SLURM]\nmemory_mb = 2\n"),
            &h,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("case-insensitive"), "{e}");

        // A plugin that exists only as a file in the plugins folder is known.
        let dir = std::env::temp_dir().join(format!("hpc-host-plugins-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mysite.wasm"), b"").unwrap();
        let text = format!(
            "[default]\nHPC_PLUGINS_DIR = \"{}\"\n[default.plugins.MySite]\nsupervise = true\n",
            dir.display()
        );
        let s = Settings::resolve(&o(&text), &h).unwrap();
        assert!(s.policy("mysite").unwrap().grants.process.supervise);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_value_names_its_source() {
        let f = write(
            "[default]\nHPC_BACKEND = \"local\"\n[default.plugins.slurm]\nmemory_mb = \"lots\"\n",
        );
        let o = Overrides {
            config: Some(f.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&o, &vars(&[("HOME", "/h")])).unwrap();
        let e = s.policy("slurm").unwrap_err().to_string();
        assert!(
            e.contains(&format!("the settings file `{}`", f.display())),
            "{e}"
        );

        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CPU_SECONDS", "-1"),
            ("CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL", "[1, 2]"),
        ]);
        let e = Settings::resolve(&Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HPC_REDIS_URL")
                && e.contains("the environment variable `CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL`"),
            "{e}"
        );
        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CPU_SECONDS", "-1"),
        ]);
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        let e = s.policy("local").unwrap_err().to_string();
        assert!(
            e.contains("cpu_seconds")
                && e.contains(
                    "the environment variable `CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CPU_SECONDS`"
                ),
            "{e}"
        );
    }

    #[test]
    fn variable_values_are_read_as_dynaconf_reads_them() {
        let v = parse_env_value;
        assert_eq!(v("8"), toml::Value::Integer(8));
        assert_eq!(v(" 8 # a comment"), toml::Value::Integer(8));
        assert_eq!(v("true"), toml::Value::Boolean(true));
        assert_eq!(v("0.5"), toml::Value::Float(0.5));
        assert_eq!(v(r#"["a"]"#), toml::Value::Array(vec!["a".into()]));
        assert_eq!(v("{ a = 1 }").get("a"), Some(&toml::Value::Integer(1)));
        for s in ["hello", "", "[a]", "redis://h:1/0", "/bin/sh", "{", "1 2"] {
            assert_eq!(v(s), toml::Value::String(s.into()), "{s:?}");
        }
    }

    #[test]
    fn variable_keys_nest_and_keep_the_case_of_config_keys() {
        let p = env_path;
        assert_eq!(p("hpc_backend"), ["HPC_BACKEND"]);
        assert_eq!(
            p("Plugins__SLURM__Config__Key__X"),
            ["PLUGINS", "slurm", "config", "Key", "X"]
        );
        assert_eq!(p(""), [""]);
        assert_eq!(p("A__"), ["A", ""]);
        assert_eq!(p("__a"), ["", "a"]);
        assert_eq!(p("____"), ["", "", ""]);
        let t = nest(&p("A__b"), toml::Value::Integer(1));
        assert_eq!(t["A"]["b"].as_integer(), Some(1));
    }

    #[test]
    fn odd_variables_do_not_panic() {
        let names = [
            "",
            "__",
            "___",
            "A__",
            "__A",
            "PLUGINS__",
            "PLUGINS____X",
            "HPC_BACKEND",
        ];
        let values = ["", "__", "{}", "{ a = 1 }", "[", "x", "1979-05-27"];
        for name in names {
            for value in values {
                for other in ["", "PLUGINS", "A"] {
                    let env = vars(&[
                        ("HOME", "/h"),
                        (&format!("{ENV_PREFIX}{other}"), "1"),
                        (&format!("{ENV_PREFIX}{name}"), value),
                    ]);
                    let _ = Settings::resolve(&Overrides::default(), &env);
                }
            }
        }
        // An empty value is unset, as an empty string in the file is.
        let env = vars(&[("HOME", "/h"), ("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "")]);
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.backend, "local");
    }

    #[test]
    fn a_variable_replaces_the_table_it_names() {
        let f = write(
            "[default.plugins.slurm]\nmemory_mb = 32\nprograms = { sbatch = \"/a\", squeue = \"/b\" }\n",
        );
        let o = Overrides {
            config: Some(f),
            ..Default::default()
        };
        let programs = "{ sbatch = \"/x\" }";
        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", programs),
        ]);
        let p = Settings::resolve(&o, &env)
            .unwrap()
            .policy("slurm")
            .unwrap();
        // The file's `squeue = "/b"` is gone with its table; the request's
        // programs stay (settings add to them), `sbatch` at the variable's path.
        let programs = &p.grants.process.programs;
        assert_eq!(programs.len(), 4, "{programs:?}");
        assert_eq!(programs["sbatch"], Path::new("/x"));
        assert_ne!(programs["squeue"], Path::new("/b"));
        assert_eq!(
            p.limits.memory_bytes,
            32 << 20,
            "the rest of the table kept"
        );

        // `{}` resets a plugin's table to the built-in defaults.
        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM", "{}"),
        ]);
        let p = Settings::resolve(&o, &env)
            .unwrap()
            .policy("slurm")
            .unwrap();
        assert_eq!(p.limits.memory_bytes, 128 << 20);
        assert!(
            p.grants.process.programs.contains_key("squeue")
                && p.grants.process.programs["sbatch"] != Path::new("/a")
        );
    }

    #[test]
    fn a_variable_cannot_reach_into_a_value_that_is_not_a_table() {
        let f = write("[default]\nHPC_POLL_SECONDS = 5\n");
        let o = Overrides {
            config: Some(f),
            ..Default::default()
        };
        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS__SLURM", "10"),
        ]);
        let e = Settings::resolve(&o, &env).unwrap_err().to_string();
        assert!(
            e.contains("`CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS__SLURM`")
                && e.contains("not a table"),
            "{e}"
        );
        // A later variable may make it a table first.
        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS", "{}"),
            ("CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS__SLURM", "10"),
        ]);
        let s = Settings::resolve(&o, &env).unwrap();
        assert_eq!(s.daemon.poll_seconds["slurm"], 10.0);
    }

    #[test]
    fn environment_tables_and_keys_are_case_insensitive_and_global_is_not_special() {
        let f = write(
            "[DEFAULT]\nslurm_partition = \"a\"\n[Production]\nSlurm_Partition = \"b\"\n\
             [global]\nSLURM_PARTITION = \"g\"\nHPC_BACKEND = 5\n",
        );
        let o = |env: &str| Overrides {
            config: Some(f.clone()),
            env: Some(env.into()),
            ..Default::default()
        };
        let h = vars(&[("HOME", "/h")]);
        let partition = |env: &str| Settings::resolve(&o(env), &h).unwrap().slurm_partition;
        assert_eq!(partition("production").as_deref(), Some("b"));
        assert_eq!(partition("development").as_deref(), Some("a"));
        let env = vars(&[
            ("HOME", "/h"),
            ("CCAT_WORKFLOW_MANAGER_slurm_partition", "c"),
        ]);
        let s = Settings::resolve(&o("production"), &env).unwrap();
        assert_eq!(s.slurm_partition.as_deref(), Some("c"));

        let e = Settings::resolve(&o("global"), &h).unwrap_err().to_string();
        assert!(
            e.contains("`HPC_BACKEND` must be a string") && e.contains("the settings file"),
            "{e}"
        );
        let f = write("development = 3\n");
        let o = Overrides {
            config: Some(f),
            ..Default::default()
        };
        let e = Settings::resolve(&o, &h).unwrap_err().to_string();
        assert!(
            e.contains("`[development]` in the settings file must be a table"),
            "{e}"
        );
    }
}
