//! Files and folders: what a plugin may be granted, which plugin files the
//! host will load, and keeping a plugin's links inside its folders.
//!
//! - A policy's `dirs` never overlap the host's own folders (state, compile
//!   cache, plugins, the settings file's folder): a plugin that could write
//!   there could forge a compile-cache entry, a job record or another
//!   plugin. Only the folders a built-in's default policy makes for it (like
//!   `<state>/slurm`) are allowed inside the state folder.
//! - A `.wasm` in the plugins folder is loaded only if it and its folder pass
//!   checks like OpenSSH's `StrictModes`: owned by this user or root, not
//!   writable by group or others (a folder writable by others only with the
//!   sticky bit, like `/tmp`), a regular file, not a symlink.
//! - A plugin cannot create symbolic links (`symlink-at` answers
//!   `not-permitted`): wasmtime-wasi never follows a link out of a preopened
//!   folder, but the workflow manager and the jobs that read those folders
//!   would. wasmtime-wasi 48's `DirPerms`/`FilePerms` have no separate
//!   permission for links (`MUTATE` allows creating files and links alike),
//!   so the host shadows that one function in the linker.

use crate::policy::Policy;
use crate::settings::Settings;
use crate::state::State;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

/// The WASI filesystem interface wasmtime-wasi 48 links (later minor
/// versions a component imports resolve to it by semver).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// A path made absolute and free of `.`/`..`, following symlinks where it exists.
fn normal(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Refuse a `dirs` entry that is, contains or lies inside one of the host's
/// own folders. Returns the message naming both.
pub fn check_dirs(
    policy: &Policy,
    settings: &Settings,
    defaults: &[PathBuf],
) -> Result<(), String> {
    let mut own: Vec<(&str, PathBuf)> = vec![
        ("state folder", settings.state_dir.clone()),
        ("compile cache", settings.cache_dir.clone()),
        ("plugins folder", settings.plugins_dir.clone()),
    ];
    if let Some(dir) = settings.file.as_deref().and_then(Path::parent) {
        own.push(("settings folder", dir.to_owned()));
    }
    let own: Vec<(&str, PathBuf)> = own.into_iter().map(|(w, p)| (w, normal(&p))).collect();
    let defaults: Vec<PathBuf> = defaults.iter().map(|d| normal(d)).collect();
    let name = &policy.plugin;
    for dir in &policy.dirs {
        let d = normal(dir);
        for (what, o) in &own {
            // Inside the settings folder is harmless (a preopen cannot reach
            // its parent); inside the state, cache or plugins folder is not.
            let inside = d.starts_with(o) && *what != "settings folder";
            if d == *o || o.starts_with(&d) || (inside && !defaults.contains(&d)) {
                return Err(format!(
                    "`plugins.{name}.dirs` grants `{}`, which overlaps the host's {what} `{}`; hint: grant a folder outside the host's own",
                    dir.display(),
                    o.display()
                ));
            }
        }
    }
    Ok(())
}

/// Whether a file or folder may be trusted: owned by this user or root, and
/// not writable by group or others (a folder only with the sticky bit, like
/// `/tmp`, where nobody else can replace or remove this user's files).
fn check_trusted(path: &Path, meta: &std::fs::Metadata, folder: bool) -> Result<(), String> {
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!(
            "`{}` is owned by uid {}, not by this user ({uid}) or root",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    let bad = if folder {
        mode & 0o022 != 0 && !sticky
    } else {
        mode & 0o022 != 0
    };
    if bad {
        return Err(format!(
            "`{}` is writable by group or others (mode {mode:o})",
            path.display()
        ));
    }
    Ok(())
}

/// StrictModes for a plugin file: the file itself (a regular file, not a
/// link) and the folder that holds it.
pub fn check_plugin_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot stat `{}`: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("`{}` is not a regular file", path.display()));
    }
    check_trusted(path, &meta, false)?;
    // A bare file name (`--config settings.toml`) is in the current folder.
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let dmeta =
        std::fs::metadata(dir).map_err(|e| format!("cannot stat `{}`: {e}", dir.display()))?;
    check_trusted(dir, &dmeta, true)
}

/// StrictModes for a file the host reads its instructions from (a plugin's
/// policy request, the settings file): the same rules as a plugin file.
/// A symbolic link is followed only if this user or root made it (a link in
/// a sticky folder belongs to whoever made it).
pub fn check_trusted_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot stat `{}`: {e}", path.display()))?;
    if !meta.file_type().is_symlink() {
        return check_plugin_file(path);
    }
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!(
            "the link `{}` is owned by uid {}, not by this user ({uid}) or root",
            path.display(),
            meta.uid()
        ));
    }
    let target = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve `{}`: {e}", path.display()))?;
    check_plugin_file(&target)
}

/// The folders on the way to `dir` (its canonical form) from `/`: each must
/// be owned by this user or root and not writable by group or others (a
/// folder writable by others only with the sticky bit, like `/tmp`, where
/// nobody else can rename or remove what this user made in it).
fn check_ancestors(dir: &Path) -> Result<(), String> {
    let mut at = PathBuf::from("/");
    for c in dir.components().skip(1) {
        at.push(c);
        let parent = at.parent().unwrap_or(Path::new("/"));
        let meta = std::fs::metadata(parent)
            .map_err(|e| format!("cannot stat `{}`: {e}", parent.display()))?;
        check_trusted(parent, &meta, true)?;
    }
    Ok(())
}

/// A folder that only this user controls: owned by this user, not writable
/// by group or others (sticky or not), and reached through folders that
/// nobody else can change ([`check_ancestors`]). Where the daemon's socket
/// lives: a folder another user could write is a folder where they could
/// swap the socket.
pub fn check_private_dir(dir: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(dir)
        .map_err(|e| format!("cannot resolve `{}`: {e}", dir.display()))?;
    check_ancestors(&real)?;
    let meta =
        std::fs::metadata(&real).map_err(|e| format!("cannot stat `{}`: {e}", real.display()))?;
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return Err(format!("`{}` is not a folder", real.display()));
    }
    if meta.uid() != uid {
        return Err(format!(
            "`{}` is owned by uid {}, not by this user ({uid})",
            real.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "`{}` is writable by group or others (mode {mode:o}); use a folder only you can write",
            real.display()
        ));
    }
    Ok(())
}

/// Make `dir` if it is missing, each new folder 0700, then check it with
/// [`check_private_dir`]. Folders that exist are never changed (no chmod:
/// they may be shared, like `/tmp`), only judged; the missing part is made
/// only below folders that pass [`check_ancestors`].
pub fn make_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let absolute =
        std::path::absolute(dir).map_err(|e| format!("cannot resolve `{}`: {e}", dir.display()))?;
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        missing.push(existing.to_path_buf());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !missing.is_empty() {
        let real = std::fs::canonicalize(existing)
            .map_err(|e| format!("cannot resolve `{}`: {e}", existing.display()))?;
        check_ancestors(&real.join("x"))?;
        for d in missing.iter().rev() {
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {}
                // Made meanwhile by someone else: judged below like any folder.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create `{}`: {e}", d.display())),
            }
        }
    }
    check_private_dir(&absolute)
}

/// What is at a socket path: nothing, or a socket this user owns. Anything
/// else (a regular file, a folder, another user's socket) is refused, never
/// removed or used.
pub fn check_own_socket(path: &Path) -> Result<bool, String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot stat `{}`: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "`{}` exists and is not a socket; refusing to use or remove it",
            path.display()
        ));
    }
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(format!(
            "the socket `{}` is owned by uid {}, not by this user ({uid}): another user made it",
            path.display(),
            meta.uid()
        ));
    }
    Ok(true)
}

/// Create `path` as an empty 0600 file if missing, and make it and its
/// SQLite companions (`-wal`, `-shm`) 0600 if they exist.
///
/// An existing file is never opened here: closing any descriptor of a file
/// drops every POSIX lock this process holds on it, and a daemon that
/// opens its store again (`reload`) holds SQLite's locks on it.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_file() && m.mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Make `symlink-at` answer `not-permitted` for every plugin.
pub fn deny_symlinks(linker: &mut Linker<State>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let r = linker
        .instance(WASI_FILESYSTEM_TYPES)
        .and_then(|mut i| {
            // Typed, so the borrowed descriptor is released by wasmtime (an
            // untyped `Val` borrow would have to be dropped by hand).
            i.func_wrap_async(
                "[method]descriptor.symlink-at",
                |_store,
                 (_dir, _old, _new): (
                    Resource<wasmtime_wasi::filesystem::Descriptor>,
                    String,
                    String,
                )| {
                    Box::new(async move { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
                },
            )
        })
        .map_err(anyhow::Error::from);
    linker.allow_shadowing(false);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn plugin_files_need_strict_modes() {
        let dir = std::env::temp_dir().join(format!("hpc-fsperm-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("p.wasm");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check_plugin_file(&f), Ok(()));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            check_plugin_file(&f)
                .unwrap_err()
                .contains("writable by group or others")
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_plugin_file(&f).is_err());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check_plugin_file(&f), Ok(()));
        let link = dir.join("l.wasm");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(
            check_plugin_file(&link)
                .unwrap_err()
                .contains("not a regular file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
