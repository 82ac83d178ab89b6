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
//! dirs = ["/data/ccat"]
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

use crate::error::HostError;
use crate::policy::{Policy, PolicyError};
use crate::request::{Placeholders, Request};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// The daemon's socket, `HPC_DAEMON` and poll intervals (`crate::daemon`).
    pub daemon: crate::daemon::DaemonSettings,
    plugin_tables: BTreeMap<String, toml::Value>,
    /// The environment variables that set keys of each plugin table.
    plugin_sources: BTreeMap<String, Vec<String>>,
    /// `the settings file `...``, if one was read.
    file_source: Option<String>,
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
        let root = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    HostError::Settings(format!(
                        "cannot read settings file `{}`: {e}",
                        path.display()
                    ))
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    HostError::Settings(format!(
                        "settings file `{}` is not valid TOML: {e}",
                        path.display()
                    ))
                })?
            }
            None => toml::Table::new(),
        };

        let env = o
            .env
            .clone()
            .or_else(|| var("ENV_FOR_DYNACONF"))
            .unwrap_or_else(|| "development".into());
        let table = |name: &str| -> Result<toml::Table, HostError> {
            match root.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                None => Ok(toml::Table::new()),
                Some((_, toml::Value::Table(t))) => Ok(upper_keys(t.clone())),
                Some((k, _)) => Err(HostError::Settings(format!(
                    "`[{k}]` in the settings file must be a table"
                ))),
            }
        };
        let mut merged = table("default")?;
        deep_merge(&mut merged, table(&env)?);

        // Which variable set which key, so an error can name where a bad value came from.
        let mut env_sources: Vec<(String, Vec<String>, String)> = Vec::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let mut path = key.split("__");
            let top = path.next().unwrap_or_default().to_ascii_uppercase();
            // Plugin names and policy keys are lowercase; the keys of a
            // plugin's `config` table are the plugin's own and keep their case.
            let mut in_config = false;
            let rest: Vec<String> = path
                .map(|seg| {
                    let key = if in_config {
                        seg.to_owned()
                    } else {
                        seg.to_ascii_lowercase()
                    };
                    in_config = in_config || seg.eq_ignore_ascii_case("config");
                    key
                })
                .collect();
            env_sources.push((top.clone(), rest.clone(), name.clone()));
            set_path(&mut merged, &top, &rest, parse_env_value(value))
                .map_err(|m| HostError::Settings(format!("`{name}`: {m}")))?;
        }

        let file_source = file
            .as_ref()
            .map(|f| format!("the settings file `{}`", f.display()));
        // Where a top-level key's value came from: the last variable that set it, else the file.
        let source_of = |key: &str| -> String {
            env_sources
                .iter()
                .rev()
                .find(|(top, rest, _)| top == key && rest.is_empty())
                .map(|(_, _, var)| format!("the environment variable `{var}`"))
                .or_else(|| file_source.clone())
                .unwrap_or_else(|| "the defaults".into())
        };
        let string = |key: &str| -> Result<Option<String>, HostError> {
            match merged.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(HostError::Settings(format!(
                    "`{key}` must be a string, not `{other}` (from {})",
                    source_of(key)
                ))),
            }
        };
        // For each plugin table, the variables that set keys in it.
        let mut plugin_sources: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (top, rest, var) in &env_sources {
            if top == "PLUGINS"
                && let Some(plugin) = rest.first()
            {
                plugin_sources
                    .entry(plugin.to_ascii_lowercase())
                    .or_default()
                    .push(var.clone());
            }
        }
        let dir = |key: &str, xdg_key: &str, fallback: &str| -> Result<PathBuf, HostError> {
            string(key)?
                .map(PathBuf::from)
                .or_else(|| xdg(xdg_key, fallback).map(|d| d.join("hpc-host")))
                .ok_or_else(|| {
                    HostError::Settings(format!(
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
                return Err(HostError::Settings(
                    "`plugins` must be a table of plugin tables".into(),
                ));
            }
        };
        let settings = Settings {
            file,
            env,
            backend: backend.to_ascii_lowercase(),
            slurm_partition: string("SLURM_PARTITION")?,
            k8s_namespace: string("K8S_NAMESPACE")?,
            redis_url: string("HPC_REDIS_URL")?,
            plugins_dir: match string("HPC_PLUGINS_DIR")? {
                Some(d) => PathBuf::from(d),
                None => dir("HPC_DATA_DIR", "XDG_DATA_HOME", ".local/share")?.join("plugins"),
            },
            cache_dir: dir("HPC_CACHE_DIR", "XDG_CACHE_HOME", ".cache")?,
            daemon: crate::daemon::DaemonSettings::from_merged(
                &merged,
                &state_dir,
                var("XDG_RUNTIME_DIR"),
            )?,
            state_dir,
            plugin_tables,
            plugin_sources,
            file_source,
        };
        settings.check_plugin_tables()?;
        Ok(settings)
    }

    /// A table for a plugin that is neither built in nor a file in the
    /// plugins folder is a typo that would silently grant nothing: refuse it.
    fn check_plugin_tables(&self) -> Result<(), HostError> {
        for name in self.plugin_tables.keys() {
            if crate::builtin::find(name).is_none() && !self.plugin_path(name).is_file() {
                return Err(HostError::Settings(format!(
                    "`[plugins.{name}]` in the settings names no plugin: `{name}` is not built in and there is no `{}`",
                    self.plugin_path(name).display()
                )));
            }
        }
        Ok(())
    }

    /// The values a policy request's `${...}` placeholders stand for.
    pub fn placeholders(&self) -> Placeholders {
        Placeholders::new(
            &self.state_dir,
            self.k8s_namespace.as_deref(),
            self.slurm_partition.as_deref(),
        )
    }

    /// The request a built-in plugin ships with, if `plugin` is one.
    pub fn builtin_request(&self, plugin: &str) -> Result<Option<Request>, HostError> {
        crate::builtin::find(plugin)
            .map(|b| Request::parse(b.policy, "built-in", true, &self.placeholders()))
            .transpose()
            .map_err(HostError::Settings)
    }

    /// The policy of a plugin under its built-in request, if it has one.
    pub fn policy(&self, plugin: &str) -> Result<Policy, HostError> {
        self.policy_with(plugin, self.builtin_request(plugin)?.as_ref())
    }

    /// The policy of a plugin: least privilege, what its request may have,
    /// then its settings table.
    pub fn policy_with(
        &self,
        plugin: &str,
        request: Option<&Request>,
    ) -> Result<Policy, HostError> {
        let grant = match self.plugin_tables.get(plugin) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                return Err(HostError::Settings(format!(
                    "`plugins.{plugin}` in the settings must be a table"
                )));
            }
        };
        Policy::resolve(plugin, request, grant).map_err(|e| match e {
            PolicyError::Invalid { message } => {
                HostError::Settings(format!("{message} (from {})", self.plugin_source(plugin)))
            }
            PolicyError::NotGranted { message } => HostError::PluginDenied {
                plugin: plugin.to_owned(),
                message: crate::capabilities::denied(plugin, "request", "policy", message),
            },
        })
    }

    /// Where a plugin's settings table came from, for errors: the variables
    /// that set its keys and the settings file.
    fn plugin_source(&self, plugin: &str) -> String {
        let mut from: Vec<String> = self
            .plugin_sources
            .get(plugin)
            .into_iter()
            .flatten()
            .map(|v| format!("the environment variable `{v}`"))
            .collect();
        from.extend(self.file_source.clone());
        if from.is_empty() {
            "the policy request".into()
        } else {
            from.join(" or ")
        }
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
        Err(HostError::Settings(format!(
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
            return Err(HostError::Settings(format!(
                "`plugins.{k}` and another table name the same plugin `{name}`: plugin names are case-insensitive, keep one"
            )));
        }
    }
    Ok(out)
}

fn upper_keys(t: toml::Table) -> toml::Table {
    t.into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect()
}

fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(
    t: &mut toml::Table,
    top: &str,
    rest: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let Some((last, middle)) = rest.split_last() else {
        t.insert(top.to_owned(), value);
        return Ok(());
    };
    let mut cur = t
        .entry(top.to_owned())
        .or_insert_with(|| toml::Value::Table(Default::default()));
    for key in middle {
        let toml::Value::Table(inner) = cur else {
            return Err("reaches into a value that is not a table".into());
        };
        cur = inner
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let toml::Value::Table(inner) = cur else {
        return Err("reaches into a value that is not a table".into());
    };
    inner.insert(last.clone(), value);
    Ok(())
}

/// Dynaconf reads `8` as an integer and `hello` as a string: TOML when it parses.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
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
            s.policy("slurm").unwrap().config["SLURM_COMMAND_TIMEOUT_MS"],
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
        assert!(s.policy("mysite").unwrap().supervise);
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
}
