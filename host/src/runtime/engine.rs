//! The wasmtime engine and its ahead-of-time compile cache.
//!
//! A component is compiled once to `<cache>/<wasm sha256>-<engine hash>.cwasm`
//! and later loaded with a memory map. Deserializing runs native code from the
//! file, so the host loads only files it could have written itself: owned by
//! this user, not writable by group or others, in a folder with the same
//! properties. Anything else, and any load error, is a miss: the component is
//! compiled again and the file replaced by an atomic rename. Each entry has a
//! `.sha256` beside it, checked before the bytes are used: a file changed or
//! cut short after it was written is recompiled, never executed. (This guards
//! against corruption and stray writers; a writer that can rewrite both files
//! runs as this user already.) The check hashes the file only when its
//! identity (device, inode, size, mtime, ctime) differs from the one
//! remembered when the host wrote or last verified it ([`crate::runtime::digests`]);
//! the owner and mode checks are made on every load, on the descriptor
//! that wasmtime then maps.

use anyhow::Context as _;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;

/// How often the epoch advances. The CPU limit of a call is checked at this
/// granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The largest component the host compiles (the built-ins are a few MiB).
pub const MAX_WASM_BYTES: usize = 64 << 20;
/// The longest a compilation may take; a component built to make the
/// compiler work without end is refused after this.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// A compile longer than this says so on a terminal (a componentize-py
/// plugin takes seconds; the built-ins a quarter of one).
pub const SLOW_COMPILE: Duration = Duration::from_secs(1);

/// `wasm`, if it is not larger than the host compiles.
fn checked(wasm: &[u8]) -> anyhow::Result<&[u8]> {
    if wasm.len() > MAX_WASM_BYTES {
        anyhow::bail!(
            "the component has {} bytes, more than the {MAX_WASM_BYTES} the host compiles",
            wasm.len()
        );
    }
    Ok(wasm)
}

/// The pool: enough slots for many calls in flight at once; a call beyond it
/// fails as a plugin error rather than taking memory without bound.
fn pooling_config() -> wasmtime::PoolingAllocationConfig {
    let mut p = wasmtime::PoolingAllocationConfig::default();
    p.total_component_instances(256)
        .total_core_instances(2048)
        .total_memories(1024)
        .total_tables(2048)
        .total_stacks(256)
        .max_memories_per_module(2)
        .max_tables_per_module(8);
    p
}

/// The wasmtime engine with its epoch ticker and compile cache.
#[derive(Clone)]
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    cache_dir: Option<PathBuf>,
    engine_hash: Arc<str>,
}

impl Engine {
    /// An engine for plugins; `cache_dir` of `None` compiles every time.
    /// With `pooling`, instances come from wasmtime's pooling allocator: a
    /// daemon makes many calls in one process, where reusing pre-mapped
    /// slots beats mapping memory per call; a one-shot CLI call does not.
    pub fn new(cache_dir: Option<PathBuf>, pooling: bool) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // A plugin that recurses without bound must trap, not take the host down.
        config.max_wasm_stack(1 << 20);
        if pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                pooling_config(),
            ));
        }
        let engine = wasmtime::Engine::new(&config).map_err(anyhow::Error::from)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("hpc-host-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the epoch thread")?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish()).into();
        Ok(Engine {
            engine,
            cache_dir,
            engine_hash,
        })
    }

    /// The digest memo beside the compile cache ([`crate::runtime::digests`]).
    pub fn memo(&self) -> Option<crate::runtime::digests::Memo> {
        self.cache_dir
            .as_deref()
            .map(crate::runtime::digests::Memo::new)
    }

    /// The component whose wasm has digest `sha256`: from the cache, else
    /// compiled from `wasm()` (called only then: a cache hit never reads
    /// the plugin's bytes). `label` names it in the notice a compile longer
    /// than [`SLOW_COMPILE`] prints on a terminal.
    pub fn component<'w>(
        &self,
        sha256: &str,
        label: &str,
        wasm: impl FnOnce() -> anyhow::Result<&'w [u8]>,
    ) -> anyhow::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            let compiled = self.precompile_bounded(checked(wasm()?)?, COMPILE_TIMEOUT, label)?;
            // SAFETY: these bytes were produced by this engine just now.
            return unsafe { Component::deserialize(&self.engine, &compiled) }
                .map_err(anyhow::Error::from);
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_hash));
        match self.load_cached(dir, &path) {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {}
            Err(e) => tracing::warn!(path = %path.display(), "ignoring compile cache entry: {e:#}"),
        }
        let compiled = self.precompile_bounded(checked(wasm()?)?, COMPILE_TIMEOUT, label)?;
        let digest = sha256_hex(&compiled);
        let stored = store_atomically(dir, &sidecar(&path), digest.as_bytes())
            .and_then(|()| store_atomically(dir, &path, &compiled));
        match stored.and_then(|()| Ok(std::fs::symlink_metadata(&path)?)) {
            // We wrote these bytes: remember their digest for this file.
            Ok(meta) => crate::runtime::digests::Memo::new(dir).put(
                &path,
                &crate::runtime::digests::Identity::of(&meta),
                &digest,
            ),
            Err(e) => tracing::warn!(path = %path.display(), "cannot write compile cache: {e:#}"),
        }
        // SAFETY: these bytes were produced by this engine just now.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(anyhow::Error::from)
    }

    /// Compile on a thread of its own, giving up after `timeout` (the host
    /// passes [`COMPILE_TIMEOUT`]; the thread then finishes in the background
    /// and its result is dropped).
    fn precompile_bounded(
        &self,
        wasm: &[u8],
        timeout: Duration,
        label: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let size = wasm.len();
        let wasm = wasm.to_vec();
        std::thread::Builder::new()
            .name("hpc-host-compile".into())
            .spawn(move || {
                let _ = tx.send(
                    engine
                        .precompile_component(&wasm)
                        .map_err(anyhow::Error::from),
                );
            })
            .context("cannot start the compile thread")?;
        let start = std::time::Instant::now();
        let first = rx.recv_timeout(SLOW_COMPILE.min(timeout));
        let slow = first.is_err() && std::io::IsTerminal::is_terminal(&std::io::stderr());
        if slow {
            eprintln!(
                "compiling {label} ({:.1} MB) for this machine; only its first use waits for this",
                size as f64 / 1e6
            );
        }
        let r = first.or_else(|_| rx.recv_timeout(timeout.saturating_sub(start.elapsed())));
        if slow && r.is_ok() {
            eprintln!("compiled {label} in {:.1} s", start.elapsed().as_secs_f64());
        }
        match r {
            Ok(r) => r,
            Err(_) => anyhow::bail!(
                "compiling took longer than {} s: refused",
                timeout.as_secs_f64()
            ),
        }
    }

    /// Whether a valid cache entry exists (for `plugins list`).
    pub fn is_cached(&self, sha256: &str) -> bool {
        self.cache_dir.as_ref().is_some_and(|d| {
            d.join(format!("{sha256}-{}.cwasm", self.engine_hash))
                .is_file()
        })
    }

    /// The cached component at `path`, mapped from the file (not copied):
    /// owner and mode checked on the open file, its digest checked against
    /// the sidecar, or remembered for this very file ([`crate::runtime::digests`]).
    fn load_cached(&self, dir: &Path, path: &Path) -> anyhow::Result<Option<Component>> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        check_private(dir, &std::fs::metadata(dir)?, true)?;
        let meta = file.metadata()?;
        check_private(path, &meta, false)?;
        let sum_path = sidecar(path);
        check_private(&sum_path, &std::fs::symlink_metadata(&sum_path)?, false)?;
        let expected = std::fs::read_to_string(&sum_path)?;
        let expected = expected.trim();
        let id = crate::runtime::digests::Identity::of(&meta);
        let memo = crate::runtime::digests::Memo::new(dir);
        if memo.get(path, &id).as_deref() != Some(expected) {
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            std::io::Read::read_to_end(&mut &file, &mut bytes)?;
            let same = crate::runtime::digests::Identity::of(&file.metadata()?) == id;
            let digest = sha256_hex(&bytes);
            if digest != expected {
                anyhow::bail!(
                    "`{}` does not match its checksum: recompiling",
                    path.display()
                );
            }
            if same {
                memo.put(path, &id, &digest);
            }
        }
        // The file just checked, by its descriptor: wasmtime maps what was
        // checked, not whatever the path names by now.
        let fd_path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        let target = if fd_path.exists() {
            fd_path.as_path()
        } else {
            path
        };
        // SAFETY: the file is one this host wrote (owner and mode checked
        // above on the open file; its digest checked now or remembered for
        // this identity), nobody else can write it, and wasmtime checks that
        // it was compiled by a compatible engine.
        let c = unsafe { Component::deserialize_file(&self.engine, target) }
            .map_err(anyhow::Error::from)?;
        drop(file);
        Ok(Some(c))
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cache path is trusted only if this user owns it and nobody else can write it.
pub fn check_private(path: &Path, meta: &std::fs::Metadata, is_dir: bool) -> anyhow::Result<()> {
    let uid = unsafe { libc::geteuid() };
    if is_dir != meta.is_dir() || (!is_dir && !meta.file_type().is_file()) {
        anyhow::bail!(
            "`{}` is not a regular {}",
            path.display(),
            if is_dir { "folder" } else { "file" }
        );
    }
    if meta.uid() != uid {
        anyhow::bail!(
            "`{}` is owned by uid {}, not by this user ({uid})",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "`{}` is writable by group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

pub(crate) fn store_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    check_private(dir, &std::fs::metadata(dir)?, true)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_unsafe_cache_files() {
        let dir = std::env::temp_dir().join(format!("hpc-host-cache-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let f = dir.join("x.cwasm");
        std::fs::write(&f, b"junk").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private(&f, &std::fs::metadata(&f).unwrap(), false).is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_private(&f, &std::fs::metadata(&f).unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        assert!(check_private(&dir, &std::fs::metadata(&dir).unwrap(), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_compile_past_its_bound_is_refused() {
        let engine = Engine::new(None, false).unwrap();
        // The local plugin takes ~0.25 s to compile here: 1 ms cuts it off.
        // The compile thread finishes in the background; the test does not wait.
        let wasm = crate::runtime::builtin::find("local").unwrap().wasm;
        let e = engine
            .precompile_bounded(wasm, Duration::from_millis(1), "local")
            .unwrap_err();
        assert_eq!(e.to_string(), "compiling took longer than 0.001 s: refused");
        // Within its bound the same compile succeeds.
        let small = wat::parse_str("(component)").unwrap();
        assert!(
            engine
                .precompile_bounded(&small, COMPILE_TIMEOUT, "small")
                .is_ok()
        );
    }
}
