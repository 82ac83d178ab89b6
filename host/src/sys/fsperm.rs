//! Which files and folders the host trusts, and making its own private.
//!
//! A `.wasm` in the plugins folder is loaded only if it and its folder pass
//! checks like OpenSSH's `StrictModes`: owned by this user or root, not
//! writable by group or others (a folder writable by others only with the
//! sticky bit, like `/tmp`), a regular file, not a symlink. The same checks
//! guard policy requests and the daemon's socket. (What a plugin may be
//! granted is `runtime::policy::dirs`; its links, `runtime::capabilities::confine`.)

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
