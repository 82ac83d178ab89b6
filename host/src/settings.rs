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
use crate::policy::{Policy, PolicyContext, PolicyFile};
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
            set_path(&mut merged, &top, &rest, parse_env_value(value))
                .map_err(|m| HostError::Settings(format!("`{name}`: {m}")))?;
        }

        let string = |key: &str| -> Result<Option<String>, HostError> {
            match merged.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(HostError::Settings(format!(
                    "`{key}` must be a string, not `{other}`"
                ))),
            }
        };
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
            Some(toml::Value::Table(t)) => t.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => {
                return Err(HostError::Settings(
                    "`plugins` must be a table of plugin tables".into(),
                ));
            }
        };
        Ok(Settings {
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
        })
    }

    /// The policy of a plugin: its default, with its settings table applied.
    pub fn policy(&self, plugin: &str) -> Result<Policy, HostError> {
        let cx = PolicyContext {
            state_dir: &self.state_dir,
            slurm_partition: self.slurm_partition.as_deref(),
            k8s_namespace: self.k8s_namespace.as_deref(),
        };
        let mut policy = Policy::default_for(plugin, &cx);
        if let Some(table) = self.plugin_tables.get(plugin) {
            let file: PolicyFile = table.clone().try_into().map_err(|e| {
                HostError::Settings(format!("`plugins.{plugin}` in the settings: {e}"))
            })?;
            policy.apply(file).map_err(HostError::Settings)?;
        }
        Ok(policy)
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
}
