//! The command line: clap's derive types, and the spec `submit`'s arguments make.

use crate::runtime::bindings::{JobSpec, ResourceRequirements};
use crate::runtime::error::HostError;
use crate::submit::spec::{self, Specs};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Submit and track HPC jobs through WebAssembly backend plugins.
///
/// The backend is the plugin that `HPC_BACKEND` names (default: `local`).
/// Exit codes: 0 ok; 1 `wait --timeout` ran out; 2 bad usage or input;
/// 3 backend error; 4 denied by policy.
#[derive(Debug, Parser)]
#[command(name = "hpc-host", version, about, max_term_width = 100)]
pub struct Cli {
    /// The settings file (default: `$HPC_HOST_CONFIG`, `$SETTINGS_FILE_FOR_DYNACONF`,
    /// then `~/.config/hpc-host/settings.toml` if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The settings environment (default: `$ENV_FOR_DYNACONF`, else `development`).
    #[arg(long = "env", global = true, value_name = "NAME")]
    pub env: Option<String>,

    /// Use this plugin instead of `HPC_BACKEND`.
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<String>,

    /// How to print results on stdout.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub output: Output,

    /// More log output on stderr (`-v`, `-vv`); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a job; prints its id.
    Submit(Box<SubmitArgs>),
    /// Show the status of jobs (one batched plugin call for all ids).
    Status {
        #[arg(required = true, value_name = "JOB_ID")]
        job_ids: Vec<String>,
    },
    /// Wait until every job has ended; prints their final status.
    Wait {
        #[arg(required = true, value_name = "JOB_ID")]
        job_ids: Vec<String>,
        /// Give up after this many seconds (exit code 1).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// Cancel jobs.
    Cancel {
        #[arg(required = true, value_name = "JOB_ID")]
        job_ids: Vec<String>,
    },
    /// What became of the submit with an idempotency key: its job's id, or
    /// that it is still in progress (exit 3, `unavailable`) or made no job
    /// (exit 3, `not-found`). Settles an interrupted submit; makes no job.
    Find {
        #[arg(long, value_name = "KEY")]
        idempotency_key: String,
    },
    /// Print a job's output (stdout) and error output (stderr).
    Logs {
        #[arg(value_name = "JOB_ID")]
        job_id: String,
    },
    /// List, inspect and precompile plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Run the daemon that CLI calls and other clients share (socket: `HPC_SOCKET`).
    Serve {
        /// Start it in the background and return once it answers.
        #[arg(long)]
        detach: bool,
        /// Print, as JSON, the socket a daemon for these settings listens on
        /// and the fingerprint of its settings (a client uses a daemon only
        /// when the fingerprints match), and exit without starting one.
        #[arg(long, conflicts_with = "detach")]
        identify: bool,
        /// Started by a client on demand: exit after `HPC_DAEMON_IDLE_SECONDS`
        /// (default 900) with no connection and no open job. A daemon started
        /// by hand or by systemd runs until stopped.
        #[arg(long, conflicts_with = "identify")]
        auto: bool,
    },
    /// Make the running daemon re-read its settings (as SIGHUP does).
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// The plugins available: built-in and in the plugins folder.
    List,
    /// What a plugin file imports and exports, its contract version, and the
    /// policy it would run under.
    Inspect {
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
    },
    /// Compile plugins into the cache ahead of time (default: all).
    Compile {
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// Run the conformance kit: the contract's promises checked against a
    /// plugin with real, short jobs, under its policy and settings. Exit 0
    /// when no check failed, 1 when one did.
    Test(TestArgs),
    /// Write a new plugin folder from a template (a README, the backend, its
    /// policy request, its tests), ready to build and test.
    New {
        /// The plugin's name (its `.wasm` will be `<NAME>.wasm`).
        #[arg(value_name = "NAME")]
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: `./NAME`); must not hold anything yet.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The languages `plugins new` has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A plugin name (built-in or in the plugins folder) or a `.wasm` file
    /// (with its `<name>.policy.toml` beside it).
    #[arg(value_name = "NAME|FILE.wasm")]
    pub plugin: String,
    /// Also write the report as JUnit XML to this file (for a site's CI).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// The image every job runs in (`image-ref`; the Kubernetes backend needs one).
    #[arg(long, value_name = "REF")]
    pub image_ref: Option<String>,
    /// The longest a job may take to reach the state a check waits for.
    #[arg(long, value_name = "SECONDS", default_value_t = 150.0)]
    pub timeout: f64,
    /// The time limit of the time-limit check's job (a scheduler may round it up).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub time_limit: f64,
    /// Run only this check (repeatable; default: all).
    #[arg(long = "check", value_name = "NAME")]
    pub checks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A JSON job spec (`-` for stdin), with the workflow manager's field names.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = [
        "job_name", "image_ref", "sif_path", "input_dir", "output_dir", "workspace_dir",
        "manifest_path", "cpu", "memory_gb", "time_hours", "gpus", "nodes", "env_vars", "command",
    ])]
    pub spec: Option<String>,
    /// Your name for this submission (e.g. the workflow's execution id):
    /// submitting again with the same key returns the first job's id, after
    /// any crash, instead of making a second job. Also the spec's
    /// `idempotency_key`.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[arg(long)]
    pub job_name: Option<String>,
    #[arg(long)]
    pub image_ref: Option<String>,
    #[arg(long)]
    pub sif_path: Option<String>,
    #[arg(long)]
    pub input_dir: Option<String>,
    #[arg(long)]
    pub output_dir: Option<String>,
    #[arg(long)]
    pub workspace_dir: Option<String>,
    #[arg(long)]
    pub manifest_path: Option<String>,
    /// CPU cores.
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Memory in GB.
    #[arg(long)]
    pub memory_gb: Option<f64>,
    /// Wall-time limit in hours.
    #[arg(long)]
    pub time_hours: Option<f64>,
    #[arg(long)]
    pub gpus: Option<u32>,
    #[arg(long)]
    pub nodes: Option<u32>,
    /// An environment variable for the job (repeatable).
    #[arg(long = "env-var", value_name = "KEY=VALUE")]
    pub env_vars: Vec<String>,
    /// The program and its arguments, after `--`; run without a shell.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    pub command: Vec<String>,
}

impl SubmitArgs {
    /// What `submit` submits: its `--spec` file (one spec, or a batch), or
    /// the spec its arguments make. Read and checked before a daemon is
    /// asked, so a bad spec fails the same way in-process and through it.
    pub fn specs(self) -> Result<Specs, HostError> {
        let Some(source) = &self.spec else {
            return self.spec_of_arguments().map(|s| Specs::One(Box::new(s)));
        };
        let text = if source == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| HostError::Input(format!("cannot read the spec from stdin: {e}")))?;
            s
        } else {
            std::fs::read_to_string(source)
                .map_err(|e| HostError::Input(format!("cannot read spec `{source}`: {e}")))?
        };
        match spec::parse_specs(&text)? {
            Specs::One(mut spec) => {
                match (&spec.idempotency_key, self.idempotency_key) {
                    (_, None) => {}
                    (None, key) => {
                        spec.idempotency_key = key;
                        spec::validate(&spec)?;
                    }
                    (Some(a), Some(b)) if *a == b => {}
                    (Some(_), Some(_)) => {
                        return Err(HostError::Input(
                            "the spec's `idempotency_key` and `--idempotency-key` differ".into(),
                        ));
                    }
                }
                Ok(Specs::One(spec))
            }
            Specs::Many(_) if self.idempotency_key.is_some() => Err(HostError::Input(
                "`--idempotency-key` names one job: in a batch, give each spec its own `idempotency_key`"
                    .into(),
            )),
            many => Ok(many),
        }
    }

    /// The spec the arguments make (no `--spec`).
    fn spec_of_arguments(self) -> Result<JobSpec, HostError> {
        if self.command.is_empty() {
            return Err(HostError::Input(
                "nothing to run: give `--spec FILE` or a command after `--`".into(),
            ));
        }
        let mut env = Vec::new();
        for kv in self.env_vars {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| HostError::Input(format!("`--env-var {kv}` is not KEY=VALUE")))?;
            env.push((k.to_owned(), v.to_owned()));
        }
        let spec = JobSpec {
            execution_command: self.command,
            image_ref: self.image_ref,
            sif_path: self.sif_path,
            input_dir: self.input_dir,
            output_dir: self.output_dir,
            workspace_dir: self.workspace_dir,
            manifest_path: self.manifest_path,
            resource_requirements: ResourceRequirements {
                cpu: self.cpu,
                memory_gb: self.memory_gb,
                time_hours: self.time_hours,
                gpus: self.gpus,
                nodes: self.nodes,
                extra: vec![],
            },
            environment_variables: env,
            job_name: self.job_name,
            idempotency_key: self.idempotency_key,
        };
        spec::validate(&spec)?;
        Ok(spec)
    }
}
