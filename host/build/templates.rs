//! Embeds the plugin templates (`plugins/template`, `plugins/template-py`,
//! `plugins/template-js`, whichever exist) for `hpc-host plugins new`: every
//! file of each folder, by its path in the folder, except build output and
//! caches. Generates `templates.rs`.

use std::fmt::Write as _;
use std::path::Path;

/// (language, folder under `plugins/`).
const TEMPLATES: &[(&str, &str)] = &[
    ("rust", "template"),
    ("python", "template-py"),
    ("js", "template-js"),
];

/// Folders that are output or caches, never part of a template.
const SKIP: &[&str] = &[
    "target",
    "node_modules",
    "__pycache__",
    "dist",
    "build",
    "venv",
    ".venv",
];

/// A template file larger than this is not embedded (a built `.wasm`).
const MAX_FILE: u64 = 256 << 10;

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if name.starts_with('.') && name != ".gitignore" {
            continue;
        }
        if meta.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                walk(root, &path, out);
            }
        } else if meta.is_file() && meta.len() <= MAX_FILE && !name.ends_with(".wasm") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, path));
        }
    }
}

pub fn generate(workspace: &Path, out_dir: &Path) {
    let mut code = String::from(
        "/// (language, folder name, path in the folder, contents).\npub const TEMPLATES: &[(&str, &str, &str, &[u8])] = &[\n",
    );
    for (lang, folder) in TEMPLATES {
        let root = workspace.join("plugins").join(folder);
        println!("cargo:rerun-if-changed={}", root.display());
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        for (rel, path) in files {
            writeln!(
                code,
                "    ({lang:?}, {folder:?}, {rel:?}, include_bytes!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("templates.rs"), code).unwrap();
}
