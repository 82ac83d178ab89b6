//! Remembered sha256 digests of files, keyed by the file's identity, so an
//! unchanged file is not read and hashed again on every CLI call (a
//! componentize-py plugin is ~19 MB, its compiled form ~35 MB).
//!
//! # Trust model
//!
//! - The memo is one file, `<compile cache>/digests.json`, in the compile
//!   cache folder the host already trusts only if this user owns it and
//!   nobody else can write it ([`crate::runtime::engine::check_private`]). The memo
//!   file itself must be a regular file (not a link), owned by this user,
//!   mode 0600 or stricter; anything else is ignored (every file is hashed
//!   again) and replaced. It is written by an atomic rename of a fresh 0600
//!   file. Only this user (and root) can write it: whoever can forge an
//!   entry can already replace the compiled code the host runs.
//! - An entry is `(path, identity) -> sha256`, where the identity is the
//!   file's device, inode, size, mtime and ctime (nanoseconds). Any write to
//!   a file changes its ctime, which its owner cannot set back (only the
//!   system clock can), and replacing it (a rename) changes its inode and
//!   ctime: a file that matches its entry has the bytes that were hashed.
//! - An entry is recorded only for bytes read through one open file whose
//!   identity (by `fstat`) was the same before and after the read: a file
//!   changed while it was hashed is never remembered.
//! - A plugin file is trusted to hold those bytes because of who may write
//!   it ([`crate::sys::fsperm::check_plugin_file`]: this user or root), checked on
//!   every load as before; the sha256 pin is compared with the digest
//!   exactly as before, whether it was hashed now or remembered.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Entries beyond this many are dropped (oldest first would need a clock;
/// the whole memo is cleared instead: a cleared memo only costs one hash).
const MAX_ENTRIES: usize = 256;

/// Who a file is: it changes whenever the file's bytes can have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Identity {
    pub fn of(m: &std::fs::Metadata) -> Identity {
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    id: Identity,
    sha256: String,
}

/// The memo of digests in a private folder (the compile cache).
#[derive(Debug, Clone)]
pub struct Memo {
    dir: PathBuf,
}

impl Memo {
    pub fn new(dir: &Path) -> Memo {
        Memo {
            dir: dir.to_owned(),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("digests.json")
    }

    /// The memo's entries, if the memo is there and private.
    fn read(&self) -> BTreeMap<PathBuf, Entry> {
        self.try_read().unwrap_or_else(|e| {
            tracing::debug!("digest memo not used: {e:#}");
            BTreeMap::new()
        })
    }

    fn try_read(&self) -> anyhow::Result<BTreeMap<PathBuf, Entry>> {
        let dir = std::fs::metadata(&self.dir)?;
        crate::runtime::engine::check_private(&self.dir, &dir, true)?;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.file())?;
        let meta = f.metadata()?;
        crate::runtime::engine::check_private(&self.file(), &meta, false)?;
        anyhow::ensure!(
            meta.mode() & 0o077 == 0,
            "`{}` is readable by group or others",
            self.file().display()
        );
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The remembered digest of `path`, if it still has identity `id`.
    pub fn get(&self, path: &Path, id: &Identity) -> Option<String> {
        self.read()
            .remove(path)
            .filter(|e| e.id == *id)
            .map(|e| e.sha256)
    }

    /// Remember `sha256` for `path` with identity `id` (best effort).
    pub fn put(&self, path: &Path, id: &Identity, sha256: &str) {
        let mut all = self.read();
        if all.len() >= MAX_ENTRIES {
            all.clear();
        }
        all.insert(
            path.to_owned(),
            Entry {
                id: *id,
                sha256: sha256.to_owned(),
            },
        );
        let text = serde_json::to_vec(&all).expect("serialisable");
        if let Err(e) = crate::runtime::engine::store_atomically(&self.dir, &self.file(), &text) {
            tracing::debug!("cannot write the digest memo: {e:#}");
        }
    }
}

/// Read a whole file (at most `max` bytes) and hash it; its bytes, digest
/// and identity, and whether the file stayed the same while it was read.
pub fn read_and_hash(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, String, Identity, bool)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let before = Identity::of(&f.metadata()?);
    if before.size > max {
        return Err(std::io::Error::other(format!(
            "it has {} bytes, more than the {max} the host loads",
            before.size
        )));
    }
    let mut bytes = Vec::with_capacity(before.size as usize);
    (&mut f).take(max + 1).read_to_end(&mut bytes)?;
    let after = Identity::of(&f.metadata()?);
    let sha256 = crate::runtime::engine::sha256_hex(&bytes);
    Ok((bytes, sha256, before, before == after))
}

/// The digest of `path`: remembered if the file is unchanged, else read,
/// hashed and remembered. With the bytes when they were read.
pub fn digest(
    memo: Option<&Memo>,
    path: &Path,
    max: u64,
) -> std::io::Result<(String, Option<Vec<u8>>)> {
    if let Some(memo) = memo {
        let id = Identity::of(&std::fs::symlink_metadata(path)?);
        if let Some(sha) = memo.get(path, &id) {
            return Ok((sha, None));
        }
    }
    let (bytes, sha256, id, stable) = read_and_hash(path, max)?;
    if stable && let Some(memo) = memo {
        memo.put(path, &id, &sha256);
    }
    Ok((sha256, Some(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpc-digests-{}", uuid::Uuid::new_v4()));
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&d)
            .unwrap();
        d
    }

    #[test]
    fn an_unchanged_file_is_remembered_a_changed_one_is_hashed_again() {
        let dir = private_dir();
        let memo = Memo::new(&dir);
        let f = dir.join("p.wasm");
        std::fs::write(&f, b"one").unwrap();
        let (a, bytes) = digest(Some(&memo), &f, 1 << 20).unwrap();
        assert_eq!(a, crate::runtime::engine::sha256_hex(b"one"));
        assert!(bytes.is_some(), "hashed the first time");
        let (b, bytes) = digest(Some(&memo), &f, 1 << 20).unwrap();
        assert_eq!((b.as_str(), bytes), (a.as_str(), None), "remembered");
        // Same size, rewritten in place: the ctime changes.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&f, b"two").unwrap();
        let (c, bytes) = digest(Some(&memo), &f, 1 << 20).unwrap();
        assert_eq!(c, crate::runtime::engine::sha256_hex(b"two"));
        assert!(bytes.is_some());
        // A memo others could read or write is not used.
        std::fs::set_permissions(memo.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(memo.try_read().is_err());
        assert_eq!(
            memo.get(&f, &Identity::of(&std::fs::metadata(&f).unwrap())),
            None
        );
        std::fs::set_permissions(memo.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(memo.try_read().is_ok());
        // A memo in a folder others can write is not used.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(memo.try_read().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_linked_memo_is_not_followed() {
        let dir = private_dir();
        let other = dir.join("elsewhere.json");
        std::fs::write(&other, b"{}").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&other, dir.join("digests.json")).unwrap();
        assert!(Memo::new(&dir).try_read().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
