//! Finding, loading and checking plugins: the [`Host`] and its options.
//!
//! A plugin is found by name: `<plugins dir>/<name>.wasm` if that file exists
//! (a site's own plugin, or an override of a built-in), else the built-in of
//! that name. At load the host checks the contract version it was built
//! against, the interfaces it imports against its policy, and its sha256
//! against a pin; then it is a [`Plugin`].

use crate::runtime::bindings::{CONTRACT_PACKAGE, HpcPluginPre, v0_1, v0_2};
use crate::runtime::capabilities;
use crate::runtime::contract::{Contract, Interfaces};
use crate::runtime::engine::Engine;
use crate::runtime::error::HostError;
use crate::runtime::plugin::{Plugin, Pre, Records};
use crate::runtime::policy::Policy;
use crate::runtime::request::Request;
use crate::runtime::settings::{Settings, check_plugin_name};
use crate::runtime::state::{Shared, State};
use crate::store::Store;
use crate::supervise::jobs::Jobs;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, Linker};

/// How a host runs its plugins: what differs between a one-shot CLI call
/// and the long-lived daemon. [`Host::with_options`] hands each part to what
/// it concerns (the engine, the process capability, local jobs, the ledger),
/// so no process-wide switch decides how a call behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOptions {
    /// Who runs the host; [`HostOptions::cli`] and [`HostOptions::daemon`]
    /// are the defaults of the rest for each.
    pub mode: Mode,
    /// Take instances from wasmtime's pooling allocator: many calls in one
    /// process reuse pre-mapped slots rather than map memory per call; a
    /// one-shot call has nothing to reuse (see [`Engine::new`]).
    pub pooling: bool,
    /// Fork local jobs' supervisors from one pre-started process
    /// ([`crate::supervise::zygote`]) rather than `exec` this binary for each: worth it
    /// for many submits in one process.
    pub zygote: bool,
    /// Programs a plugin runs get `SIGKILL` when the host dies
    /// (`PR_SET_PDEATHSIG`), so a dead submitter leaves nothing behind that
    /// could still make its job, and the ledger may take its claim over at
    /// once. It makes std `fork` rather than `vfork`: cheap for the CLI,
    /// ~1.4 ms per program for the daemon, whose claims the ledger honours
    /// until their deadline instead (`submit::ledger`).
    pub programs_die_with_host: bool,
}

/// Who runs a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One command, one process (`hpc-host submit …`).
    Cli,
    /// `hpc-host serve`: many calls in one long-lived process.
    Daemon,
}

impl HostOptions {
    /// A one-shot call: no pool, no zygote, programs die with the host.
    pub const fn cli() -> HostOptions {
        HostOptions {
            mode: Mode::Cli,
            pooling: false,
            zygote: false,
            programs_die_with_host: true,
        }
    }

    /// The daemon: pooled instances, a zygote, programs started with `vfork`
    /// (they may outlive it).
    pub const fn daemon() -> HostOptions {
        HostOptions {
            mode: Mode::Daemon,
            pooling: true,
            zygote: true,
            programs_die_with_host: false,
        }
    }
}

impl Default for HostOptions {
    fn default() -> HostOptions {
        HostOptions::cli()
    }
}

/// The host: settings, the engine, the linker and the kv store, shared by
/// every plugin it loads.
pub struct Host {
    settings: Arc<Settings>,
    options: HostOptions,
    engine: Engine,
    linker: Linker<State>,
    exe: PathBuf,
    store: Mutex<Option<Store>>,
    /// Forks local jobs' supervisors, with [`HostOptions::zygote`].
    zygote: Option<crate::supervise::zygote::Zygote>,
}

/// Where a plugin's bytes come from.
pub enum Origin {
    Builtin,
    File(PathBuf),
}

/// A plugin's bytes, before compilation.
pub struct Source {
    pub name: String,
    pub origin: Origin,
    pub sha256: String,
    /// The bytes, once read: a file's digest may be remembered
    /// ([`crate::runtime::digests`]), and its bytes are read only to compile it.
    wasm: std::sync::OnceLock<Cow<'static, [u8]>>,
}

/// One plugin of `plugins list` (also the daemon's `GET /v1/plugins`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginRow {
    pub name: String,
    /// `built-in`, or the file's path.
    pub source: String,
    pub sha256: String,
    /// The contract version it exports, `none`, or why it does not compile.
    pub contract: String,
    /// Whether its compiled form is in the cache.
    pub cached: bool,
    /// Whether it is the backend (`HPC_BACKEND`).
    pub selected: bool,
}

impl Host {
    /// A host for a one-shot call ([`HostOptions::cli`]).
    pub fn new(settings: &Settings) -> Result<Host, HostError> {
        Host::with_options(settings, HostOptions::cli())
    }

    /// A host that runs its plugins as `options` say (the daemon's:
    /// [`HostOptions::daemon`]).
    pub fn with_options(settings: &Settings, options: HostOptions) -> Result<Host, HostError> {
        let engine = Engine::new(Some(settings.cache_dir.clone()), options.pooling)?;
        let mut linker = Linker::new(&engine.engine);
        capabilities::add_to_linker(&mut linker)?;
        let exe = std::env::current_exe().map_err(|e| {
            HostError::Internal(anyhow::anyhow!("cannot find this program's path: {e}"))
        })?;
        tracing::debug!(?options, "host options");
        Ok(Host {
            settings: Arc::new(settings.clone()),
            options,
            engine,
            linker,
            zygote: options
                .zygote
                .then(|| crate::supervise::zygote::Zygote::new(exe.clone())),
            exe,
            store: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How this host runs its plugins.
    pub fn options(&self) -> HostOptions {
        self.options
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Built-in plugins and the `.wasm` files of the plugins folder, by name.
    pub fn plugin_names(&self) -> Vec<String> {
        let mut names: Vec<String> = crate::runtime::builtin::BUILTIN_PLUGINS
            .iter()
            .map(|p| p.name.to_owned())
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.settings.plugins_dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "wasm")
                    && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                {
                    names.push(stem.to_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// `plugins list`: every plugin by name, where it comes from, its
    /// contract version, whether it is compiled, and whether it is the backend.
    pub fn plugin_rows(&self) -> Result<Vec<PluginRow>, HostError> {
        let mut rows = Vec::new();
        for name in self.plugin_names() {
            let source = self.source(&name)?;
            let contract = match self.compile(&source).map(|c| self.interfaces(&c).contract) {
                Ok(Some(v)) => v,
                Ok(None) => "none".into(),
                Err(e) => format!("error: {}", e.report_line()),
            };
            rows.push(PluginRow {
                selected: name == self.settings.backend,
                source: match &source.origin {
                    Origin::Builtin => "built-in".to_owned(),
                    Origin::File(p) => p.display().to_string(),
                },
                cached: self.engine.is_cached(&source.sha256),
                sha256: source.sha256,
                contract,
                name,
            });
        }
        Ok(rows)
    }

    /// The plugin that `HPC_BACKEND` names.
    pub fn backend(&self) -> Result<Plugin, HostError> {
        self.load(&self.settings.backend)
    }

    /// Find a plugin's bytes by name.
    pub fn source(&self, name: &str) -> Result<Source, HostError> {
        check_plugin_name(name)?;
        let path = self.settings.plugin_path(name);
        if path.is_file() {
            crate::sys::fsperm::check_plugin_file(&path).map_err(|message| {
                HostError::PluginDenied {
                    plugin: name.to_owned(),
                    message: capabilities::denied(
                        name,
                        "load",
                        &path.display().to_string(),
                        message,
                    ),
                }
            })?;
            return Source::open(name, &path, self.engine.memo().as_ref());
        }
        match crate::runtime::builtin::find(name) {
            Some(b) => Ok(Source {
                name: name.to_owned(),
                origin: Origin::Builtin,
                wasm: Cow::Borrowed(b.wasm).into(),
                sha256: b.sha256.to_owned(),
            }),
            None => Err(HostError::PluginNotFound {
                name: name.to_owned(),
                path,
            }),
        }
    }

    pub fn load(&self, name: &str) -> Result<Plugin, HostError> {
        self.load_source(self.source(name)?)
    }

    /// Compile (or fetch from the cache) and check a plugin.
    pub fn load_source(&self, source: Source) -> Result<Plugin, HostError> {
        let name = source.name.clone();
        let policy = Arc::new(self.policy(&source)?);
        crate::runtime::policy::dirs::check_dirs(
            &policy,
            &self.settings,
            &self.settings.default_dirs(&name),
        )
        .map_err(HostError::settings)?;
        if let Some(pin) = &policy.sha256
            && *pin != source.sha256
        {
            let message = format!(
                "its sha256 is {}, but `plugins.{name}.sha256` pins {pin}",
                source.sha256
            );
            return Err(HostError::PluginDenied {
                plugin: name.clone(),
                message: capabilities::denied(&name, "load", &source.sha256, message),
            });
        }
        // Folders the host owns (under its state folder) are made on first use;
        // a site's own folders must exist already.
        for dir in policy
            .dirs
            .iter()
            .filter(|d| d.starts_with(&self.settings.state_dir))
        {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(dir)
            .map_err(|e| HostError::settings(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let component = self.compile(&source)?;
        let interfaces = self.interfaces(&component);
        let contract = crate::runtime::contract::check(&name, &interfaces, &policy)?;
        let load_error = |e: wasmtime::Error| HostError::PluginLoad {
            plugin: name.clone(),
            message: "its imports cannot be linked".into(),
            cause: Some(crate::runtime::error::cause(e)),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(load_error)?;
        let pre = match contract {
            Contract::V0_3 => Pre::V0_3(HpcPluginPre::new(pre).map_err(load_error)?),
            Contract::V0_2 => Pre::V0_2(v0_2::HpcPluginPre::new(pre).map_err(load_error)?),
            Contract::V0_1 => {
                tracing::info!(
                    plugin = %name,
                    "built against {CONTRACT_PACKAGE}@{}: it loads, but its submits are not \
                     idempotent across crashes (no `find-job`)",
                    contract.version()
                );
                Pre::V0_1(v0_1::HpcPluginPre::new(pre).map_err(load_error)?)
            }
        };
        let jobs = Jobs::new(&self.settings.state_dir, &name).with_zygote(self.zygote.clone());
        let store = self.store()?;
        let setup = capabilities::Setup {
            store: store.clone(),
            jobs,
            exe: self.exe.clone(),
            programs_die_with_host: self.options.programs_die_with_host,
        };
        let shared = Shared {
            caps: capabilities::Contexts::new(&policy, &setup),
            policy,
        };
        let records = Records {
            store,
            state_dir: self.settings.state_dir.clone(),
            redis_url: self.settings.redis_url.clone(),
            programs_die_with_host: self.options.programs_die_with_host,
        };
        Ok(Plugin {
            name,
            pre,
            shared,
            records,
        })
    }

    /// A plugin's policy request: `<name>.policy.toml` beside its file, else
    /// the built-in's of that name (so a file overriding a built-in without a
    /// request of its own keeps the built-in's), else none.
    pub fn request(&self, source: &Source) -> Result<Option<Request>, HostError> {
        if let Origin::File(path) = &source.origin
            && let Some(r) =
                Request::beside(path, &self.settings.placeholders()).map_err(HostError::settings)?
        {
            return Ok(Some(r));
        }
        self.settings.builtin_request(&source.name)
    }

    /// A plugin's policy: its request, granted, narrowed or refused by the settings.
    pub fn policy(&self, source: &Source) -> Result<Policy, HostError> {
        self.settings
            .policy_with(&source.name, self.request(source)?.as_ref())
    }

    pub fn compile(&self, source: &Source) -> Result<Component, HostError> {
        let label = format!("plugin `{}`", source.name);
        self.engine
            .component(&source.sha256, &label, || source.wasm())
            .map_err(|e| HostError::PluginLoad {
                plugin: source.name.clone(),
                message: "not a valid WebAssembly component".into(),
                cause: Some(crate::runtime::error::cause(e)),
            })
    }

    /// The imports and exports of a compiled component.
    pub fn interfaces(&self, component: &Component) -> Interfaces {
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let contract = exports.iter().find_map(|e| {
            e.strip_prefix(&format!("{CONTRACT_PACKAGE}/hpc-backend@"))
                .map(str::to_owned)
        });
        Interfaces {
            imports,
            exports,
            contract,
        }
    }

    fn store(&self) -> Result<Store, HostError> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let store = Store::open(self.settings.redis_url.as_deref(), &self.settings.state_dir)
            .map_err(HostError::Store)?;
        *slot = Some(store.clone());
        Ok(store)
    }
}

impl Source {
    /// A plugin file, read and hashed now.
    pub fn from_file(name: &str, path: &Path) -> Result<Source, HostError> {
        Source::open(name, path, None)
    }

    /// A plugin file: its digest remembered in `memo` if the file is
    /// unchanged since it was hashed (then its bytes are not read), else
    /// read and hashed now.
    pub fn open(
        name: &str,
        path: &Path,
        memo: Option<&crate::runtime::digests::Memo>,
    ) -> Result<Source, HostError> {
        let (sha256, bytes) = crate::runtime::digests::digest(
            memo,
            path,
            crate::runtime::engine::MAX_WASM_BYTES as u64,
        )
        .map_err(|e| HostError::PluginLoad {
            plugin: name.to_owned(),
            message: format!("cannot read `{}`", path.display()),
            cause: Some(crate::runtime::error::cause(e)),
        })?;
        let wasm = std::sync::OnceLock::new();
        if let Some(b) = bytes {
            let _ = wasm.set(Cow::Owned(b));
        }
        Ok(Source {
            name: name.to_owned(),
            origin: Origin::File(path.to_owned()),
            sha256,
            wasm,
        })
    }

    /// The plugin's bytes, read now if they were not yet; they must have
    /// the digest the source was checked by.
    pub fn wasm(&self) -> anyhow::Result<&[u8]> {
        if let Some(w) = self.wasm.get() {
            return Ok(w);
        }
        let Origin::File(path) = &self.origin else {
            anyhow::bail!("a built-in plugin without bytes");
        };
        let (bytes, sha256, _, _) = crate::runtime::digests::read_and_hash(
            path,
            crate::runtime::engine::MAX_WASM_BYTES as u64,
        )
        .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
        if sha256 != self.sha256 {
            anyhow::bail!(
                "`{}` changed while it was loaded (sha256 {sha256}, was {}); try again",
                path.display(),
                self.sha256
            );
        }
        Ok(self.wasm.get_or_init(|| Cow::Owned(bytes)))
    }
}
