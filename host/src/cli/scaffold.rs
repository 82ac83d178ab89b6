//! `hpc-host plugins new NAME --lang rust|python|js`: a ready plugin folder
//! from the templates embedded at build time (`plugins/template`,
//! `plugins/template-py`, `plugins/template-js`; `host/build/templates.rs`),
//! with the template's name replaced by the new one. The file list is the
//! template folder's, whatever it holds; its README says what comes next.

use crate::cli::Lang;
use crate::runtime::error::HostError;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "rust",
        Lang::Python => "python",
        Lang::Js => "js",
    }
}

/// The template's files for `lang`: (folder name, path, contents).
pub fn files(lang: Lang) -> Vec<(&'static str, &'static str, &'static [u8])> {
    TEMPLATES
        .iter()
        .filter(|(l, ..)| *l == lang_name(lang))
        .map(|(_, folder, path, bytes)| (*folder, *path, *bytes))
        .collect()
}

/// A template text with the template's names made `name`'s.
fn rename(text: &str, folder: &str, name: &str) -> String {
    let snake = name.replace('-', "_");
    text.replace("hpc-plugin-template", &format!("hpc-plugin-{name}"))
        .replace("hpc_plugin_template", &format!("hpc_plugin_{snake}"))
        .replace(&format!("plugins/{folder}"), &format!("plugins/{name}"))
}

/// Write the plugin folder `dir` (default `./NAME`); the folder written.
pub fn new_plugin(name: &str, lang: Lang, dir: Option<PathBuf>) -> Result<PathBuf, HostError> {
    crate::runtime::settings::check_plugin_name(name)?;
    let files = files(lang);
    if files.is_empty() {
        return Err(HostError::Input(format!(
            "this build of hpc-host has no {} template; hint: it embeds `plugins/template{}` \
             as it was when the binary was built; rebuild from a checkout that has it",
            lang_name(lang),
            match lang {
                Lang::Rust => "",
                Lang::Python => "-py",
                Lang::Js => "-js",
            }
        )));
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(HostError::Input(format!(
            "`{}` exists and is not empty",
            dir.display()
        )));
    }
    let io = |p: &Path, e: std::io::Error| {
        HostError::Input(format!("cannot write `{}`: {e}", p.display()))
    };
    for (folder, rel, bytes) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| io(parent, e))?;
        }
        let contents = match std::str::from_utf8(bytes) {
            Ok(text) => rename(text, folder, name).into_bytes(),
            Err(_) => bytes.to_vec(),
        };
        let mode = if contents.starts_with(b"#!") {
            0o755
        } else {
            0o644
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        std::io::Write::write_all(&mut f, &contents).map_err(|e| io(&path, e))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_template_is_embedded_and_renamed() {
        let files = files(Lang::Rust);
        assert!(
            files.iter().any(|(_, p, _)| *p == "Cargo.toml"),
            "{files:?}"
        );
        assert!(files.iter().any(|(_, p, _)| *p == "README.md"));
        let dir = std::env::temp_dir().join(format!("hpc-new-{}", uuid::Uuid::new_v4()));
        let out = new_plugin("pbs-site", Lang::Rust, Some(dir.clone())).unwrap();
        let cargo = std::fs::read_to_string(out.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"hpc-plugin-pbs-site\""), "{cargo}");
        assert!(!cargo.contains("hpc-plugin-template"));
        // Never over a folder that holds something.
        let e = new_plugin("pbs-site", Lang::Rust, Some(dir.clone())).unwrap_err();
        assert!(e.to_string().contains("is not empty"), "{e}");
        assert!(new_plugin("../evil", Lang::Rust, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
