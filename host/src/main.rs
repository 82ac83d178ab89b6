//! The `hpc-host` binary: parse the arguments, start logging, run the command,
//! and turn the outcome into an exit code.

use clap::Parser;
use hpc_host::HostError;
use hpc_host::cli::render::Render;
use hpc_host::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    // The job supervisor forks, so it must start before any thread does.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "__supervise" {
        return ExitCode::from(
            hpc_host::supervise::supervisor::supervise_main(std::path::Path::new(&args[2])) as u8,
        );
    }
    if args.len() == 2 && args[1] == "__zygote" {
        return ExitCode::from(hpc_host::supervise::supervisor::zygote_main() as u8);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let mut render = Render::stdio(cli.output);
    let outcome = if let Command::Serve { .. } = cli.command {
        hpc_host::cli::serve(&cli, &mut render)
    } else {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(hpc_host::cli::run(cli, &mut render)),
            Err(e) => Err(HostError::Internal(anyhow::anyhow!(
                "cannot start the async runtime: {e}"
            ))),
        }
    };
    match outcome {
        Ok(status) => status.into(),
        Err(e) => render.error(&e).into(),
    }
}

fn init_logging(verbose: u8) {
    // kube's client logs every failed connection at ERROR; the host reports
    // it already, as `unavailable`, so keep it to `-vv`.
    let default = match verbose {
        0 => "warn,kube_client=off",
        1 => "info,wasmtime=warn,cranelift=warn,kube_client=off",
        _ => "debug,wasmtime=info,cranelift=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
