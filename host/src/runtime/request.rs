//! A plugin's policy request: what it says it needs, in the keys of a
//! `[default.plugins.<name>]` settings table (see [`crate::runtime::policy::PolicyFile`]).
//!
//! Every plugin brings its request the same way, and one piece of code reads
//! them all: a built-in ships `plugins/<name>/policy.toml` (embedded by
//! `build.rs`), a site plugin a `<name>.policy.toml` beside its `.wasm`. A
//! file beside the `.wasm` was chosen over a custom section so that an admin
//! can read (and diff) what a plugin asks for without any tool.
//!
//! What differs is trust. A built-in's request ships with the host, so it is
//! the plugin's default policy, which the settings add to. A site plugin's
//! request is only a request: anything beyond the least-privilege default
//! must be granted by the admin's settings, or the plugin is refused at load
//! with the setting to change. A settings list grants the requested entries
//! it names (and adds its others); a requested entry it leaves out refuses
//! the plugin too, unless the settings' `replace` names that key: nothing a
//! plugin asks for is dropped without the settings saying so.
//!
//! A request names site facts through placeholders: `${HPC_STATE_DIR}`,
//! `${K8S_NAMESPACE}`, `${SLURM_PARTITION}`, `${HPC_PUSH_ADDRESS}` and
//! `${HOSTNAME}`. A list entry or
//! `config` key whose placeholder has no value is left out. A program may be a
//! bare name (`sbatch`), found in the usual program folders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the host looks for a program that a request names without a path.
const PROGRAM_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin", "/opt/slurm/bin"];

/// The site facts a request's placeholders may name.
pub struct Placeholders {
    values: BTreeMap<&'static str, Option<String>>,
}

impl Placeholders {
    pub fn new(
        state_dir: &Path,
        k8s_namespace: Option<&str>,
        slurm_partition: Option<&str>,
    ) -> Self {
        let mut values = BTreeMap::new();
        values.insert("HPC_STATE_DIR", Some(state_dir.display().to_string()));
        values.insert("K8S_NAMESPACE", k8s_namespace.map(str::to_owned));
        values.insert("SLURM_PARTITION", slurm_partition.map(str::to_owned));
        values.insert("HOSTNAME", Some(crate::sys::hostname()));
        values.insert("HPC_PUSH_ADDRESS", None);
        Placeholders { values }
    }

    /// Give placeholder `name` a value (`None`: entries naming it are left out).
    pub fn set(&mut self, name: &'static str, value: Option<String>) {
        self.values.insert(name, value);
    }

    /// Fill the placeholders of one string: `Ok(None)` when one has no value.
    fn fill(&self, text: &str, used: &mut BTreeSet<String>) -> Result<Option<String>, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start..].find('}') else {
                return Err(format!("`{text}` has an unclosed `${{`"));
            };
            let name = &rest[start + 2..start + len];
            used.insert(name.to_owned());
            match self.values.get(name) {
                None => {
                    return Err(format!(
                        "`${{{name}}}` is not a placeholder (known: {})",
                        self.values
                            .keys()
                            .map(|k| format!("${{{k}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Some(None) => return Ok(None),
                Some(Some(v)) => out.push_str(v),
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        Ok(Some(out))
    }
}

/// A plugin's request, placeholders filled in.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where it was read from (`built-in` or a file path), for messages.
    pub origin: String,
    /// Whether it ships with the host (a built-in's) and so is granted as is.
    pub trusted: bool,
    /// The request as a settings table.
    pub table: toml::Table,
    /// For each key, the settings the request's placeholders named.
    pub placeholders: BTreeMap<String, BTreeSet<String>>,
}

impl Request {
    /// Read a request from its text; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        trusted: bool,
        ph: &Placeholders,
    ) -> Result<Request, String> {
        let raw: toml::Table = text
            .parse()
            .map_err(|e| format!("the policy request `{origin}` is not valid TOML: {e}"))?;
        let mut table = toml::Table::new();
        let mut placeholders = BTreeMap::new();
        for (key, value) in raw {
            let mut used = BTreeSet::new();
            let value = fill(value, ph, &mut used)
                .map_err(|e| format!("the policy request `{origin}`, `{key}`: {e}"))?;
            if !used.is_empty() {
                placeholders.insert(key.clone(), used);
            }
            if let Some(mut value) = value {
                if key == "programs"
                    && let toml::Value::Table(programs) = &mut value
                {
                    for (_, path) in programs.iter_mut() {
                        if let toml::Value::String(p) = path
                            && !p.contains('/')
                        {
                            let found = find_program(p).display().to_string();
                            *p = found;
                        }
                    }
                }
                table.insert(key, value);
            }
        }
        if table.contains_key(crate::runtime::policy::layers::REPLACE) {
            return Err(format!(
                "the policy request `{origin}`: `replace` belongs in the settings (it names the keys whose settings value replaces the request's); a request says what the plugin needs"
            ));
        }
        // The same keys and types as a settings table: checked once, here.
        crate::runtime::policy::PolicyFile::parse(&table)
            .map_err(|e| format!("the policy request `{origin}`: {e}"))?;
        Ok(Request {
            origin: origin.to_owned(),
            trusted,
            table,
            placeholders,
        })
    }

    /// Read `<stem>.policy.toml` beside a plugin file, if there is one.
    pub fn beside(wasm: &Path, ph: &Placeholders) -> Result<Option<Request>, String> {
        let path = request_path(wasm);
        // A request grants as much as the plugin beside it: it must pass the
        // same owner and mode checks (another user may create files in a
        // sticky shared folder, but not one this host will read).
        if std::fs::symlink_metadata(&path).is_ok() {
            crate::sys::fsperm::check_trusted_file(&path)
                .map_err(|e| format!("the policy request is not trusted: {e}"))?;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => Request::parse(&text, &path.display().to_string(), false, ph).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        }
    }

    /// The table the policy is built from: the whole request if trusted, else
    /// what needs no grant and what `grant` (the settings table) grants.
    /// A limit (the host's or a capability's, see
    /// [`crate::runtime::policy::Policy::limit_values`]) no higher than least
    /// privilege's, the plugin's own `config`, an empty value and a slow
    /// poll need no grant. Any other key must be set in `grant`: a single
    /// value is then the settings' (kept here only where they agree), a list
    /// or table is kept if the settings list every entry it asks for (the
    /// settings then add theirs), and left out if `replace` names it. A
    /// requested key the settings do not set, or an entry they do not list,
    /// is refused.
    pub fn granted(
        &self,
        plugin: &str,
        grant: Option<&toml::Table>,
        replace: &[String],
    ) -> Result<toml::Table, String> {
        if self.trusted {
            return Ok(self.table.clone());
        }
        let defaults = crate::runtime::policy::Policy::least_privilege(plugin).limit_values();
        let mut out = toml::Table::new();
        for (key, value) in &self.table {
            // A slower poll than the host's default costs nobody anything.
            let slow_poll = key == "poll_seconds"
                && value
                    .as_float()
                    .or_else(|| value.as_integer().map(|i| i as f64))
                    .is_some_and(|s| s >= crate::runtime::settings::daemon::DEFAULT_POLL_SECONDS);
            let free = key == "config"
                || slow_poll
                || within_default(value, defaults.get(key))
                || is_empty(value);
            if free {
                out.insert(key.clone(), value.clone());
                continue;
            }
            let Some(given) = grant.and_then(|g| g.get(key)) else {
                return Err(format!(
                    "it requests `{key} = {value}` ({}), which the settings do not grant\nhint: set `plugins.{plugin}.{key}` in the settings to grant it",
                    self.origin
                ));
            };
            if replace.contains(key) {
                continue;
            }
            if !(value.is_array() || value.is_table()) {
                // A single value is the settings'; the same as asked, it
                // answers the request (and `plugins inspect` says so).
                if given == value {
                    out.insert(key.clone(), value.clone());
                }
                continue;
            }
            let unlisted = unlisted(value, given);
            if !unlisted.is_empty() {
                let them = if unlisted.len() == 1 { "it" } else { "them" };
                return Err(format!(
                    "it requests {} in `{key}` ({}), which `plugins.{plugin}.{key}` in the settings does not list\nhint: add {them} to `plugins.{plugin}.{key}` to grant {them}, or name `{key}` in `plugins.{plugin}.replace` to run the plugin without {them}",
                    unlisted.join(", "),
                    self.origin
                ));
            }
            out.insert(key.clone(), value.clone());
        }
        Ok(out)
    }
}

/// The entries of a requested list (or the names of a requested table) that
/// the settings' value of the same key does not have, each as `` `text` ``.
fn unlisted(requested: &toml::Value, given: &toml::Value) -> Vec<String> {
    let shown = |v: &toml::Value| {
        format!(
            "`{}`",
            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
        )
    };
    match (requested, given) {
        (toml::Value::Array(asked), toml::Value::Array(listed)) => asked
            .iter()
            .filter(|v| !listed.contains(v))
            .map(shown)
            .collect(),
        (toml::Value::Table(asked), toml::Value::Table(listed)) => asked
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .map(|k| format!("`{k}`"))
            .collect(),
        // Of another type: the settings' value is refused when parsed.
        _ => Vec::new(),
    }
}

/// `<plugins dir>/<name>.policy.toml` for `<plugins dir>/<name>.wasm`.
pub fn request_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("policy.toml")
}

fn fill(
    value: toml::Value,
    ph: &Placeholders,
    used: &mut BTreeSet<String>,
) -> Result<Option<toml::Value>, String> {
    Ok(match value {
        toml::Value::String(s) => ph.fill(&s, used)?.map(toml::Value::String),
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(fill(item, ph, used)?);
            }
            Some(toml::Value::Array(out))
        }
        toml::Value::Table(t) => {
            let mut out = toml::Table::new();
            for (k, v) in t {
                if let Some(v) = fill(v, ph, used)? {
                    out.insert(k, v);
                }
            }
            Some(toml::Value::Table(out))
        }
        other => Some(other),
    })
}

fn is_empty(v: &toml::Value) -> bool {
    match v {
        toml::Value::Array(a) => a.is_empty(),
        toml::Value::Table(t) => t.is_empty(),
        toml::Value::Boolean(b) => !b,
        _ => false,
    }
}

/// Whether a requested limit is no more than least privilege's (`None`: the
/// key is not a limit).
fn within_default(v: &toml::Value, default: Option<&serde_json::Value>) -> bool {
    let requested = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match (requested, default.and_then(serde_json::Value::as_f64)) {
        (Some(n), Some(limit)) => n <= limit,
        _ => false,
    }
}

fn find_program(name: &str) -> PathBuf {
    PROGRAM_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph(ns: Option<&str>) -> Placeholders {
        Placeholders::new(Path::new("/state"), ns, None)
    }

    #[test]
    fn placeholders_fill_or_drop() {
        let text = "dirs = [\"${HPC_STATE_DIR}/slurm\"]\nk8s_namespaces = [\"${K8S_NAMESPACE}\"]\n[config]\nP = \"${SLURM_PARTITION}\"\nW = \"${HPC_STATE_DIR}/slurm\"";
        let r = Request::parse(text, "t", true, &ph(None)).unwrap();
        assert_eq!(
            r.table["dirs"].as_array().unwrap()[0].as_str(),
            Some("/state/slurm")
        );
        assert!(r.table["k8s_namespaces"].as_array().unwrap().is_empty());
        assert!(!r.table["config"].as_table().unwrap().contains_key("P"));
        assert!(r.placeholders["k8s_namespaces"].contains("K8S_NAMESPACE"));
        let r = Request::parse(text, "t", true, &ph(Some("ccat"))).unwrap();
        assert_eq!(
            r.table["k8s_namespaces"].as_array().unwrap()[0].as_str(),
            Some("ccat")
        );
        let e = Request::parse("dirs = [\"${NOPE}\"]", "t", true, &ph(None)).unwrap_err();
        assert!(e.contains("`${NOPE}` is not a placeholder"), "{e}");
        let e = Request::parse("programz = {}", "t", true, &ph(None)).unwrap_err();
        assert!(e.contains("programz"), "{e}");
    }

    #[test]
    fn a_site_request_needs_a_grant() {
        let r = Request::parse(
            "programs = { sbatch = \"/usr/bin/sbatch\" }\nmemory_mb = 16\n[config]\nX = \"1\"",
            "mysite.policy.toml",
            false,
            &ph(None),
        )
        .unwrap();
        let e = r.granted("mysite", None, &[]).unwrap_err();
        assert!(
            e.contains("plugins.mysite.programs") && e.contains("mysite.policy.toml"),
            "{e}"
        );
        // Narrowed away, said so: `replace` names the key.
        let grant: toml::Table = "programs = {}\nreplace = [\"programs\"]".parse().unwrap();
        let t = r
            .granted("mysite", Some(&grant), &["programs".to_owned()])
            .unwrap();
        assert!(
            !t.contains_key("programs") && t.contains_key("memory_mb") && t.contains_key("config")
        );
        let small = Request::parse(
            "kv_max_bytes = 1024\nkv_max_keys = 100000",
            "s",
            false,
            &ph(None),
        )
        .unwrap();
        assert_eq!(small.granted("s", None, &[]).unwrap().len(), 2);
        let more = Request::parse("kv_max_keys = 100001", "m", false, &ph(None)).unwrap();
        assert!(
            more.granted("m", None, &[])
                .unwrap_err()
                .contains("plugins.m.kv_max_keys")
        );
        // A single value is the settings': kept only where they agree.
        let flag = Request::parse("supervise = true", "f", false, &ph(None)).unwrap();
        let yes: toml::Table = "supervise = true".parse().unwrap();
        assert_eq!(flag.granted("f", Some(&yes), &[]).unwrap(), yes);
        let no: toml::Table = "supervise = false".parse().unwrap();
        assert!(flag.granted("f", Some(&no), &[]).unwrap().is_empty());
        // Fewer running jobs than the machine's default bound narrow it; more need a grant.
        let one = Request::parse("max_running_jobs = 1", "o", false, &ph(None)).unwrap();
        assert_eq!(one.granted("o", None, &[]).unwrap().len(), 1);
        let many = Request::parse("max_running_jobs = 1024", "m", false, &ph(None)).unwrap();
        if std::thread::available_parallelism().unwrap().get() < 1024 {
            assert!(
                many.granted("m", None, &[])
                    .unwrap_err()
                    .contains("plugins.m.max_running_jobs")
            );
        }
        let big = Request::parse("memory_mb = 4096", "m", false, &ph(None)).unwrap();
        assert!(
            big.granted("m", None, &[])
                .unwrap_err()
                .contains("plugins.m.memory_mb")
        );
    }

    #[test]
    fn a_site_list_is_granted_entry_by_entry() {
        let r = Request::parse(
            "dirs = [\"/data/a\", \"/data/b\"]\nprograms = { sbatch = \"/usr/bin/sbatch\" }",
            "mysite.policy.toml",
            false,
            &ph(None),
        )
        .unwrap();
        // Every requested entry listed (and more): the request's entries are
        // kept, for the settings to add to.
        let grant: toml::Table =
            "dirs = [\"/data/b\", \"/data/a\", \"/x\"]\nprograms = { sbatch = \"/opt/sbatch\" }"
                .parse()
                .unwrap();
        let t = r.granted("mysite", Some(&grant), &[]).unwrap();
        assert_eq!(t["dirs"], r.table["dirs"]);
        assert_eq!(t["programs"], r.table["programs"]);
        // An entry left out is refused, naming it and both ways to answer.
        let grant: toml::Table =
            "dirs = [\"/data/a\", \"/x\"]\nprograms = { sinfo = \"/usr/bin/sinfo\" }"
                .parse()
                .unwrap();
        let e = r.granted("mysite", Some(&grant), &[]).unwrap_err();
        assert!(
            e.contains("`/data/b` in `dirs`")
                && !e.contains("`/data/a`")
                && e.contains("add it to `plugins.mysite.dirs`")
                && e.contains("`dirs` in `plugins.mysite.replace`"),
            "{e}"
        );
        let replace = ["dirs".to_owned()];
        let e = r.granted("mysite", Some(&grant), &replace).unwrap_err();
        assert!(e.contains("`sbatch` in `programs`"), "{e}");
        let replace = ["dirs".to_owned(), "programs".to_owned()];
        let t = r.granted("mysite", Some(&grant), &replace).unwrap();
        assert!(t.is_empty(), "both answered by the settings alone: {t:?}");
    }

    #[test]
    fn a_request_cannot_say_replace() {
        let e =
            Request::parse("dirs = []\nreplace = [\"dirs\"]", "r", true, &ph(None)).unwrap_err();
        assert!(e.contains("`replace` belongs in the settings"), "{e}");
    }
}
