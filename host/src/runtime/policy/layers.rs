//! How the layers of a plugin's policy combine, and which layer each part of
//! the result came from.
//!
//! Three layers, in order: least privilege, the plugin's request (all of a
//! built-in's; of a site plugin's, what needs no grant or what the settings
//! grant: see [`crate::runtime::request::Request::granted`]) and the
//! `[<env>.plugins.<name>]` settings table. The settings table *adds* to the
//! request ([`merge`]):
//!
//! - a list key (`dirs`, `env`, `program_env`, `k8s_namespaces`, `k8s_kinds`,
//!   `k8s_service_accounts`) gains the settings' entries it lacks, order kept;
//! - a table key (`programs`, `config`) gains the settings' names, and a name
//!   both set takes the settings' value (`sbatch` at the site's path);
//! - a single value (a limit, a flag, `kv_prefix`, `sha256`) is the settings'.
//!
//! So widening one key never takes away what the plugin itself asked for.
//! Before this, a settings value replaced the request's: the README's own
//! example, `dirs = ["/data/ccat/workspaces"]`, took the SLURM plugin's script
//! folder away and every job without a `workspace_dir` then failed (issue 19).
//! Removing stays possible, but only when said: for a key the table's
//! `replace` list names, the settings' value is the whole answer.
//!
//! ```toml
//! [default.plugins.slurm]
//! dirs = ["/data/ccat/workspaces"]   # besides the plugin's own <state>/slurm
//! k8s_kinds = ["batch/Job"]
//! replace = ["k8s_kinds"]            # exactly these kinds, nothing requested besides
//! ```
//!
//! [`provenance`] labels each part of the result with its layer, for
//! `plugins inspect`.

use serde_json::{Map, Value};

/// The settings key that names the keys whose settings value replaces the
/// request's instead of adding to it.
pub const REPLACE: &str = "replace";

/// The keys a settings table's `replace` names, checked against the table:
/// each must be a key the same table sets to a list or a table (a single
/// value replaces anyway, and replacing with nothing is said with `[]`).
pub fn replaced(plugin: &str, table: &toml::Table) -> Result<Vec<String>, String> {
    let Some(value) = table.get(REPLACE) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = value
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| {
            format!("`plugins.{plugin}.replace` must be a list of policy keys, not `{value}`")
        })?;
    for name in &names {
        match table.get(name) {
            Some(toml::Value::Array(_) | toml::Value::Table(_)) => {}
            Some(_) => {
                return Err(format!(
                    "`plugins.{plugin}.replace` names `{name}`, a single value: the settings' value replaces the request's anyway, so leave it out"
                ));
            }
            None => {
                return Err(format!(
                    "`plugins.{plugin}.replace` names `{name}`, which `plugins.{plugin}` does not set\nhint: set `{name}` too (`{name} = []` or `{name} = {{}}` for none)"
                ));
            }
        }
    }
    Ok(names)
}

/// The settings table `over` laid onto the (granted) request `base`: lists
/// add the entries they lack, tables the names, single values and the keys
/// in `replace` are the settings'. `over`'s `replace` key itself is left out.
pub fn merge(base: &toml::Table, over: &toml::Table, replace: &[String]) -> toml::Table {
    let mut out = base.clone();
    for (key, value) in over {
        if key == REPLACE {
            continue;
        }
        let merged = match (out.remove(key), value) {
            _ if replace.contains(key) => value.clone(),
            (Some(toml::Value::Array(have)), toml::Value::Array(add)) => {
                toml::Value::Array(union(have, add))
            }
            (Some(toml::Value::Table(mut have)), toml::Value::Table(add)) => {
                have.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
                toml::Value::Table(have)
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

/// `have` then the entries of `add` it lacks, each once, in order.
fn union(have: Vec<toml::Value>, add: &[toml::Value]) -> Vec<toml::Value> {
    let mut out: Vec<toml::Value> = Vec::with_capacity(have.len() + add.len());
    for v in have.into_iter().chain(add.iter().cloned()) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A layer of a plugin's policy, as `plugins inspect` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    LeastPrivilege,
    Request,
    Settings,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::LeastPrivilege => "least-privilege",
            Layer::Request => "request",
            Layer::Settings => "settings",
        }
    }
}

/// Which layer each part of a resolved policy came from, in the shape of its
/// `plugins inspect` view (the last of `layers`, each layer's view in order):
/// a single value becomes its layer's name, a list an object from each entry
/// to its layer's name, an object the same per member.
///
/// A part's layer is the first whose view has it with the value it ends
/// with: a `dirs` entry the settings repeat from the request is the
/// request's, and a limit the settings set to its default is least
/// privilege's. For a key in `replace` the request is skipped (the settings
/// value is the whole answer, whatever it repeats).
pub fn provenance(layers: &[(Layer, Value)], replace: &[String]) -> Value {
    let Some((last, Value::Object(view))) = layers.last() else {
        return Value::Null;
    };
    let mut out = Map::new();
    for (key, value) in view {
        let from: Vec<(Layer, Option<&Value>)> = layers
            .iter()
            .filter(|(l, _)| !(*l == Layer::Request && replace.contains(key)))
            .map(|(l, v)| (*l, v.get(key)))
            .collect();
        out.insert(key.clone(), trace(&from, value, *last));
    }
    Value::Object(out)
}

/// The layer of `value` and of each of its entries (see [`provenance`]);
/// `layers` hold the same part of each layer's view.
fn trace(layers: &[(Layer, Option<&Value>)], value: &Value, last: Layer) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| {
                    let inner: Vec<_> = layers
                        .iter()
                        .map(|(l, x)| (*l, x.and_then(|x| x.get(k))))
                        .collect();
                    (k.clone(), trace(&inner, v, last))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Object(
            items
                .iter()
                .map(|item| {
                    let name = item
                        .as_str()
                        .map_or_else(|| item.to_string(), str::to_owned);
                    let from = first(layers, last, |v| {
                        v.as_array().is_some_and(|a| a.contains(item))
                    });
                    (name, from)
                })
                .collect(),
        ),
        single => first(layers, last, |v| v == single),
    }
}

/// The name of the first layer whose part `has` what is asked (`last` if none).
fn first(layers: &[(Layer, Option<&Value>)], last: Layer, has: impl Fn(&Value) -> bool) -> Value {
    let layer = layers
        .iter()
        .find(|(_, v)| v.is_some_and(&has))
        .map_or(last, |(l, _)| *l);
    Value::from(layer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn a_list_adds_in_order_without_duplicates() {
        let base = table("dirs = [\"/state/slurm\"]\nenv = [\"HOME\", \"USER\", \"HOME\"]");
        let over = table("dirs = [\"/data\", \"/state/slurm\", \"/data\"]\nenv = []");
        let m = merge(&base, &over, &[]);
        assert_eq!(m["dirs"], table("v = [\"/state/slurm\", \"/data\"]")["v"]);
        // An empty list adds nothing: it removes nothing either.
        assert_eq!(m["env"], table("v = [\"HOME\", \"USER\"]")["v"]);
        // A list the request does not have is the settings' as is.
        let m = merge(&toml::Table::new(), &table("k8s_kinds = [\"Pod\"]"), &[]);
        assert_eq!(m["k8s_kinds"], table("v = [\"Pod\"]")["v"]);
    }

    #[test]
    fn a_table_adds_names_and_the_settings_value_wins_per_name() {
        let base = table(
            "programs = { sbatch = \"/usr/bin/sbatch\", squeue = \"/usr/bin/squeue\" }\n[config]\nA = \"1\"\nB = \"2\"",
        );
        let over = table(
            "programs = { sbatch = \"/opt/sbatch\", sinfo = \"/usr/bin/sinfo\" }\n[config]\nB = \"3\"",
        );
        let m = merge(&base, &over, &[]);
        assert_eq!(
            m["programs"],
            table(
                "v = { sbatch = \"/opt/sbatch\", squeue = \"/usr/bin/squeue\", sinfo = \"/usr/bin/sinfo\" }"
            )["v"]
        );
        assert_eq!(m["config"], table("v = { A = \"1\", B = \"3\" }")["v"]);
    }

    #[test]
    fn a_single_value_is_the_settings() {
        let base = table("memory_mb = 64\nsupervise = true\nkv_prefix = \"a:\"\npoll_seconds = 10");
        let over = table("memory_mb = 256\nsupervise = false\nkv_prefix = \"b:\"");
        let m = merge(&base, &over, &[]);
        assert_eq!(m["memory_mb"].as_integer(), Some(256));
        assert_eq!(m["supervise"].as_bool(), Some(false));
        assert_eq!(m["kv_prefix"].as_str(), Some("b:"));
        assert_eq!(m["poll_seconds"].as_integer(), Some(10), "unset: kept");
    }

    #[test]
    fn replace_takes_the_settings_value_as_is() {
        let base = table(
            "dirs = [\"/state/slurm\"]\nk8s_kinds = [\"batch/Job\", \"Pod\"]\nprograms = { sbatch = \"/a\", squeue = \"/b\" }",
        );
        let over = table(
            "dirs = [\"/data\"]\nk8s_kinds = [\"batch/Job\"]\nprograms = {}\nreplace = [\"k8s_kinds\", \"programs\"]",
        );
        let replace = replaced("slurm", &over).unwrap();
        let m = merge(&base, &over, &replace);
        assert_eq!(m["k8s_kinds"], table("v = [\"batch/Job\"]")["v"]);
        assert_eq!(m["programs"], toml::Value::Table(toml::Table::new()));
        assert_eq!(
            m["dirs"],
            table("v = [\"/state/slurm\", \"/data\"]")["v"],
            "not named: adds"
        );
        assert!(!m.contains_key(REPLACE), "not a policy key of the result");
    }

    #[test]
    fn replace_names_only_list_or_table_keys_the_table_sets() {
        let e = replaced("slurm", &table("replace = [\"dirs\"]")).unwrap_err();
        assert!(e.contains("does not set") && e.contains("dirs = []"), "{e}");
        let e = replaced("slurm", &table("memory_mb = 1\nreplace = [\"memory_mb\"]")).unwrap_err();
        assert!(e.contains("a single value"), "{e}");
        let e = replaced("slurm", &table("replace = \"dirs\"")).unwrap_err();
        assert!(e.contains("`plugins.slurm.replace` must be a list"), "{e}");
        assert!(replaced("slurm", &table("dirs = []")).unwrap().is_empty());
    }

    #[test]
    fn provenance_names_the_first_layer_with_the_final_value() {
        let least = json!({ "dirs": [], "limits": { "memory_mb": 128, "cpu_seconds": 10.0 },
                            "supervise": false, "config": {}, "sha256": null });
        let request = json!({ "dirs": ["/state/slurm"], "limits": { "memory_mb": 64, "cpu_seconds": 10.0 },
                              "supervise": false, "config": { "W": "/state/slurm" }, "sha256": null });
        let settings = json!({ "dirs": ["/state/slurm", "/data"], "limits": { "memory_mb": 128, "cpu_seconds": 10.0 },
                               "supervise": true, "config": { "W": "/data", "P": "debug" }, "sha256": null });
        let layers = [
            (Layer::LeastPrivilege, least),
            (Layer::Request, request),
            (Layer::Settings, settings),
        ];
        assert_eq!(
            provenance(&layers, &[]),
            json!({
                "dirs": { "/state/slurm": "request", "/data": "settings" },
                // Set back to the default by the settings: least privilege's value.
                "limits": { "memory_mb": "least-privilege", "cpu_seconds": "least-privilege" },
                "supervise": "settings",
                "config": { "W": "settings", "P": "settings" },
                "sha256": "least-privilege",
            })
        );
        // Replaced: the request's entries the settings repeat are the settings'.
        let p = provenance(&layers, &["dirs".to_owned()]);
        assert_eq!(
            p["dirs"],
            json!({ "/state/slurm": "settings", "/data": "settings" })
        );
        // No settings table: two layers.
        let p = provenance(&layers[..2], &[]);
        assert_eq!(p["dirs"], json!({ "/state/slurm": "request" }));
        assert_eq!(p["limits"]["memory_mb"], "request");
    }
}
