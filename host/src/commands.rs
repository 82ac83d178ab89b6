//! What each CLI command does. stdout carries results only (text or JSON);
//! progress, warnings and errors go to stderr.

use crate::bindings::{BackendError, HpcJobInfo, JobSpec, ResourceRequirements};
use crate::cli::{Cli, Command, Output, PluginsCommand, SubmitArgs};
use crate::error::{ExitStatus, HostError, kind_and_message};
use crate::plugin::{Host, Origin, Source};
use crate::sanitize::{escape, escape_block};
use crate::settings::{Overrides, Settings};
use crate::spec::{self, JobInfoJson, Specs};
use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Run one command; the `ExitStatus` is for the process.
pub async fn run(cli: Cli) -> Result<ExitStatus, HostError> {
    let overrides = Overrides {
        config: cli.config.clone(),
        env: cli.env.clone(),
        backend: cli.backend.clone(),
    };
    let settings = Settings::load(&overrides)?;
    if let Command::Reload = cli.command {
        return crate::daemon::client::reload(&settings).await;
    }
    let cli = match crate::daemon::client::try_run(cli, &settings).await? {
        Ok(status) => return Ok(status),
        Err(cli) => cli,
    };
    let host = Host::new(&settings)?;
    let out = cli.output;
    match cli.command {
        Command::Submit(args) => match submit_specs(*args)? {
            Specs::One(spec) => {
                let id = host.backend()?.submit(&spec).await?;
                match out {
                    Output::Text => print(&escape(&id)),
                    Output::Json => print(&serde_json::json!({ "job_id": id }).to_string()),
                }
                Ok(ExitStatus::Success)
            }
            Specs::Many { items, .. } => {
                let results = crate::ledger::submit_parsed(&host.backend()?, items).await?;
                let results: Vec<_> = results
                    .into_iter()
                    .map(crate::daemon::api::submitted_json)
                    .collect();
                Ok(print_batch(&results, out))
            }
        },
        Command::Find { idempotency_key } => {
            let found = crate::ledger::lookup(&host.backend()?, &idempotency_key).await?;
            Ok(print_submission(&idempotency_key, &found, out))
        }
        Command::Status { job_ids } => {
            let results = host.backend()?.get_statuses(&job_ids).await?;
            Ok(print_statuses(&job_ids, &results, out))
        }
        Command::Wait { job_ids, timeout } => wait(&host, &job_ids, timeout, out).await,
        Command::Cancel { job_ids } => {
            let plugin = host.backend()?;
            let mut worst = ExitStatus::Success;
            for id in &job_ids {
                match plugin.cancel(id).await {
                    Ok(()) => {
                        if out == Output::Json {
                            print(
                                &serde_json::json!({ "job_id": id, "cancelled": true }).to_string(),
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {}", escape(&e.to_string()));
                        worst = worst.max(e.exit_status());
                    }
                }
            }
            Ok(worst)
        }
        Command::Logs { job_id } => {
            let logs = host.backend()?.get_logs(&job_id).await?;
            match out {
                Output::Text => {
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(escape_block(&logs.stdout).as_bytes());
                    let _ = std::io::stderr().write_all(escape_block(&logs.stderr).as_bytes());
                }
                Output::Json => print(
                    &serde_json::json!({ "job_id": job_id, "stdout": logs.stdout, "stderr": logs.stderr }).to_string(),
                ),
            }
            Ok(ExitStatus::Success)
        }
        Command::Plugins(cmd) => plugins(&host, cmd, out).await,
        Command::Serve { .. } | Command::Reload => Err(HostError::Input(
            "`serve` and `reload` do not run here".into(),
        )),
    }
}

/// Print a line on stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

/// `find`'s answer: the id (exit 0), or why there is none (exit 3).
pub(crate) fn print_submission(
    key: &str,
    found: &crate::ledger::Submission,
    out: Output,
) -> ExitStatus {
    use crate::ledger::Submission;
    if out == Output::Json {
        print(
            &serde_json::json!({
                "idempotency_key": key, "state": found.state(), "job_id": found.job_id(),
            })
            .to_string(),
        );
    }
    match found {
        Submission::Made(id) => {
            if out == Output::Text {
                print(&escape(id));
            }
            ExitStatus::Success
        }
        Submission::InProgress => {
            eprintln!(
                "error: unavailable: a submit with idempotency key `{key}` is still at work; ask again shortly"
            );
            ExitStatus::Backend
        }
        Submission::NeverMade => {
            eprintln!("error: not-found: no job was made with idempotency key `{key}`");
            ExitStatus::Backend
        }
    }
}

/// A batch submit's answer: per spec, in order, its id on a line of its own
/// (an empty line for a spec that has none, its error on stderr), or one JSON
/// array; the exit status of the worst error.
pub(crate) fn print_batch(results: &[spec::SubmittedJson], out: Output) -> ExitStatus {
    let mut worst = ExitStatus::Success;
    for (i, r) in results.iter().enumerate() {
        if let Some(e) = &r.error {
            eprintln!("error: spec {i}: {}: {}", e.kind, escape(&e.message));
            worst = worst.max(crate::daemon::api::exit_status(e.exit_code.unwrap_or(3)));
        }
        if out == Output::Text {
            print(&escape(r.job_id.as_deref().unwrap_or_default()));
        }
    }
    if out == Output::Json {
        print(&serde_json::to_string(results).expect("answers serialize"));
    }
    worst
}

/// What `submit` submits: its `--spec` file (one spec, or a batch), or the
/// spec its arguments make.
pub(crate) fn submit_specs(args: SubmitArgs) -> Result<Specs, HostError> {
    let Some(source) = &args.spec else {
        return submit_spec(args).map(|s| Specs::One(Box::new(s)));
    };
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| HostError::Input(format!("cannot read the spec from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| HostError::Input(format!("cannot read spec `{source}`: {e}")))?
    };
    match spec::parse_specs(&text)? {
        Specs::One(mut spec) => {
            match (&spec.idempotency_key, args.idempotency_key) {
                (_, None) => {}
                (None, key) => spec.idempotency_key = key,
                (Some(a), Some(b)) if *a == b => {}
                (Some(_), Some(_)) => {
                    return Err(HostError::Input(
                        "the spec's `idempotency_key` and `--idempotency-key` differ".into(),
                    ));
                }
            }
            spec::validate(&spec)?;
            Ok(Specs::One(spec))
        }
        Specs::Many { .. } if args.idempotency_key.is_some() => Err(HostError::Input(
            "`--idempotency-key` names one job: in a batch, give each spec its own `idempotency_key`"
                .into(),
        )),
        many => Ok(many),
    }
}

/// The spec `submit`'s arguments make (`--spec` is read by [`submit_specs`]).
fn submit_spec(args: SubmitArgs) -> Result<JobSpec, HostError> {
    if args.command.is_empty() {
        return Err(HostError::Input(
            "nothing to run: give `--spec FILE` or a command after `--`".into(),
        ));
    }
    let mut env = Vec::new();
    for kv in args.env_vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| HostError::Input(format!("`--env-var {kv}` is not KEY=VALUE")))?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let spec = JobSpec {
        execution_command: args.command,
        image_ref: args.image_ref,
        sif_path: args.sif_path,
        input_dir: args.input_dir,
        output_dir: args.output_dir,
        workspace_dir: args.workspace_dir,
        manifest_path: args.manifest_path,
        resource_requirements: ResourceRequirements {
            cpu: args.cpu,
            memory_gb: args.memory_gb,
            time_hours: args.time_hours,
            gpus: args.gpus,
            nodes: args.nodes,
            extra: vec![],
        },
        environment_variables: env,
        job_name: args.job_name,
        idempotency_key: args.idempotency_key,
    };
    spec::validate(&spec)?;
    Ok(spec)
}

pub(crate) fn print_statuses(
    ids: &[String],
    results: &[Result<HpcJobInfo, BackendError>],
    out: Output,
) -> ExitStatus {
    let mut worst = ExitStatus::Success;
    let mut json = Vec::new();
    for (id, r) in ids.iter().zip(results) {
        match r {
            Ok(info) => match out {
                Output::Json => json.push(JobInfoJson::from(info)),
                Output::Text => print(&escape(&text_line(info))),
            },
            Err(e) => {
                let (kind, message) = kind_and_message(e);
                eprintln!("error: {}", escape(&format!("{id}: {kind}: {message}")));
                worst = worst.max(ExitStatus::of_backend_error(e));
                json.push(JobInfoJson::failed(id, e));
            }
        }
    }
    if out == Output::Json {
        let text = if ids.len() == 1 {
            serde_json::to_string(&json[0])
        } else {
            serde_json::to_string(&json)
        };
        print(&text.expect("serialisable"));
    }
    worst
}

fn text_line(i: &HpcJobInfo) -> String {
    let mut line = format!("{}  {}", i.job_id, spec::status_name(i.status));
    let mut field = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            line.push_str(&format!("  {name}={v}"));
        }
    };
    field("exit", i.exit_code.map(|c| c.to_string()));
    field("wall", i.wall_time_seconds.map(|s| format!("{s:.1}s")));
    field("cpu", i.cpu_hours.map(|h| format!("{h:.6}h")));
    field("mem", i.peak_memory_gb.map(|g| format!("{g:.3}GB")));
    field("state", i.native_state.clone());
    if let Some(r) = &i.reason {
        line.push_str(&format!("  ({r})"));
    }
    line
}

async fn wait(
    host: &Host,
    ids: &[String],
    timeout: Option<f64>,
    out: Output,
) -> Result<ExitStatus, HostError> {
    let start = Instant::now();
    let deadline = match timeout {
        None => None,
        Some(t) => Some(
            Duration::try_from_secs_f64(t.max(0.0))
                .ok()
                .filter(|d| *d <= crate::policy::MAX_SECONDS)
                .and_then(|d| start.checked_add(d))
                .ok_or_else(|| {
                    HostError::Input(format!(
                        "`--timeout {t}` must be a number of seconds from 0 to {}",
                        crate::policy::MAX_SECONDS.as_secs()
                    ))
                })?,
        ),
    };
    let plugin = host.backend()?;
    let progress = std::io::stderr().is_terminal();
    let mut interval = Duration::from_millis(200);
    loop {
        let results = plugin.get_statuses(ids).await?;
        let open = results
            .iter()
            .filter(|r| matches!(r, Ok(i) if !i.status.is_terminal()))
            .count();
        if open == 0 {
            if progress {
                eprint!("\r\x1b[K");
            }
            return Ok(print_statuses(ids, &results, out));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            if progress {
                eprint!("\r\x1b[K");
            }
            print_statuses(ids, &results, out);
            eprintln!(
                "error: {open} of {} jobs still running after {:.0} s",
                ids.len(),
                start.elapsed().as_secs_f64()
            );
            return Ok(ExitStatus::WaitTimeout);
        }
        if progress {
            eprint!(
                "\r\x1b[Kwaiting: {open} of {} jobs not finished ({:.0} s)",
                ids.len(),
                start.elapsed().as_secs_f64()
            );
        }
        let mut pause = interval;
        if let Some(d) = deadline {
            pause = pause.min(d.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(pause).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(2));
    }
}

async fn plugins(host: &Host, cmd: PluginsCommand, out: Output) -> Result<ExitStatus, HostError> {
    match cmd {
        PluginsCommand::List => {
            print_plugin_rows(plugin_rows(host)?, out);
            Ok(ExitStatus::Success)
        }
        PluginsCommand::Inspect { file } => {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("plugin")
                .to_owned();
            let source = Source::from_file(&name, &file)?;
            let component = host.compile(&source)?;
            let i = host.interfaces(&component);
            let request = host.request(&source)?;
            // Resolved once: a refused request is logged once, and is the verdict.
            let policy = host.policy(&source);
            let verdict = match &policy {
                Err(e) => format!("refused: {e}"),
                Ok(_) => match host.load_source(source) {
                    Ok(_) => "loads".to_owned(),
                    Err(e) => format!("refused: {e}"),
                },
            };
            // What the plugin asks for, and what the settings grant of it.
            let requested = request.as_ref().map(|r| {
                serde_json::json!({ "from": r.origin, "trusted": r.trusted, "policy": r.table })
            });
            let value = serde_json::json!({
                "name": name,
                "file": file.display().to_string(),
                "contract": i.contract,
                "imports": i.imports,
                "exports": i.exports,
                "verdict": verdict,
                "requested": requested,
                "policy": policy.as_ref().ok().map(crate::capabilities::inspect),
                // The same shape as `policy`: each value, list entry or table
                // name's layer (`least-privilege`, `request`, `settings`).
                "provenance": policy.as_ref().ok().map(|p| &p.provenance),
            });
            match out {
                Output::Json => print(&value.to_string()),
                Output::Text => print(&serde_json::to_string_pretty(&value).expect("serialisable")),
            }
            Ok(ExitStatus::Success)
        }
        PluginsCommand::Compile { name } => {
            let names = match name {
                Some(n) => vec![n],
                None => plugin_names(host.settings()),
            };
            for name in names {
                let start = Instant::now();
                host.compile(&host.source(&name)?)?;
                eprintln!(
                    "compiled `{name}` in {:.0} ms",
                    start.elapsed().as_secs_f64() * 1e3
                );
            }
            Ok(ExitStatus::Success)
        }
        PluginsCommand::Test(args) => crate::conformance::command(host, args, out).await,
        PluginsCommand::New { name, lang, dir } => {
            let dir = crate::scaffold::new_plugin(&name, lang, dir)?;
            match out {
                Output::Json => print(&serde_json::json!({ "dir": dir }).to_string()),
                Output::Text => print(&escape(&dir.display().to_string())),
            }
            eprintln!(
                "wrote `{}`: its README.md says what comes next",
                dir.display()
            );
            Ok(ExitStatus::Success)
        }
    }
}

/// Built-in plugins and the `.wasm` files of the plugins folder, by name.
fn plugin_names(settings: &Settings) -> Vec<String> {
    let mut names: Vec<String> = crate::builtin::BUILTIN_PLUGINS
        .iter()
        .map(|p| p.name.to_owned())
        .collect();
    if let Ok(entries) = std::fs::read_dir(&settings.plugins_dir) {
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

/// `plugins list` as JSON rows: every plugin by name, where it comes from, its
/// contract version, whether it is compiled, and whether it is the backend.
pub(crate) fn plugin_rows(host: &Host) -> Result<Vec<serde_json::Value>, HostError> {
    let mut rows = Vec::new();
    for name in plugin_names(host.settings()) {
        let source = host.source(&name)?;
        let origin = match &source.origin {
            Origin::Builtin => "built-in".to_owned(),
            Origin::File(p) => p.display().to_string(),
        };
        let cached = host.engine().is_cached(&source.sha256);
        let contract = host.compile(&source).map(|c| host.interfaces(&c).contract);
        let contract = match contract {
            Ok(Some(v)) => v,
            Ok(None) => "none".into(),
            Err(e) => format!("error: {e}"),
        };
        rows.push(serde_json::json!({
            "name": name, "source": origin, "sha256": source.sha256,
            "contract": contract, "cached": cached,
            "selected": name == host.settings().backend,
        }));
    }
    Ok(rows)
}

/// Print `plugins list` rows as text or JSON.
pub(crate) fn print_plugin_rows(rows: Vec<serde_json::Value>, out: Output) {
    match out {
        Output::Json => print(&serde_json::Value::Array(rows).to_string()),
        Output::Text => {
            for r in rows {
                print(&format!(
                    "{}{:<16} {:<10} sha256:{}  {}",
                    if r["selected"] == true { "* " } else { "  " },
                    r["name"].as_str().unwrap_or(""),
                    r["contract"].as_str().unwrap_or(""),
                    r["sha256"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                    r["source"].as_str().unwrap_or(""),
                ));
            }
        }
    }
}
