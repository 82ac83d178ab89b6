//! `plugins inspect`, `compile`, `test` and `new`: in-process only (they
//! read files of this machine and compile plugins; `plugins list` is a job
//! command, answered by the daemon too).

use super::args::{Output, PluginsCommand};
use super::render::Render;
use crate::runtime::error::{ExitStatus, HostError};
use crate::runtime::host::{Host, Source};
use std::time::Instant;

pub async fn run(
    host: &Host,
    cmd: PluginsCommand,
    r: &mut Render,
) -> Result<ExitStatus, HostError> {
    match cmd {
        PluginsCommand::List => Ok(r.plugins(&host.plugin_rows()?)),
        PluginsCommand::Inspect { file } => inspect(host, &file, r).map(|()| ExitStatus::Success),
        PluginsCommand::Compile { name } => {
            let names = match name {
                Some(n) => vec![n],
                None => host.plugin_names(),
            };
            for name in names {
                let start = Instant::now();
                host.compile(&host.source(&name)?)?;
                r.notice(&format!(
                    "compiled `{name}` in {:.0} ms",
                    start.elapsed().as_secs_f64() * 1e3
                ));
            }
            Ok(ExitStatus::Success)
        }
        PluginsCommand::Test(args) => super::conformance::command(host, args, r).await,
        PluginsCommand::New { name, lang, dir } => {
            let dir = super::scaffold::new_plugin(&name, lang, dir)?;
            match r.output() {
                Output::Json => r.json(&serde_json::json!({ "dir": dir })),
                Output::Text => r.text(&crate::runtime::sanitize::escape(
                    &dir.display().to_string(),
                )),
            }
            r.notice(&format!(
                "wrote `{}`: its README.md says what comes next",
                dir.display()
            ));
            Ok(ExitStatus::Success)
        }
    }
}

/// What a plugin file imports and exports, its contract, the policy it
/// asks for and the one it would run under, and whether it loads.
fn inspect(host: &Host, file: &std::path::Path, r: &mut Render) -> Result<(), HostError> {
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let source = Source::from_file(&name, file)?;
    let component = host.compile(&source)?;
    let i = host.interfaces(&component);
    let request = host.request(&source)?;
    // Resolved once: a refused request is logged once, and is the verdict.
    let policy = host.policy(&source);
    let verdict = match &policy {
        Err(e) => format!("refused: {}", e.report_line()),
        Ok(_) => match host.load_source(source) {
            Ok(_) => "loads".to_owned(),
            Err(e) => format!("refused: {}", e.report_line()),
        },
    };
    // What the plugin asks for, and what the settings grant of it.
    let requested = request
        .as_ref()
        .map(|r| serde_json::json!({ "from": r.origin, "trusted": r.trusted, "policy": r.table }));
    let value = serde_json::json!({
        "name": name,
        "file": file.display().to_string(),
        "contract": i.contract,
        "imports": i.imports,
        "exports": i.exports,
        "verdict": verdict,
        "requested": requested,
        "policy": policy.as_ref().ok().map(crate::runtime::capabilities::inspect),
        // The same shape as `policy`: each value, list entry or table
        // name's layer (`least-privilege`, `request`, `settings`).
        "provenance": policy.as_ref().ok().map(|p| &p.provenance),
    });
    match r.output() {
        Output::Json => r.json(&value),
        // Pretty JSON: serde escapes every control character a plugin's
        // text could carry.
        Output::Text => r.text(&serde_json::to_string_pretty(&value).expect("serialisable")),
    }
    Ok(())
}
