//! A policy's `dirs` never overlap the host's own folders (state, compile
//! cache, plugins, the settings file's folder): a plugin that could write
//! there could forge a compile-cache entry, a job record or another plugin.
//! Only the folders a built-in's default policy makes for it (like
//! `<state>/slurm`) are allowed inside the state folder.

use super::Policy;
use crate::runtime::settings::Settings;
use std::path::{Component, Path, PathBuf};

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
