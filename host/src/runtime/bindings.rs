//! The host's `bindgen!`s: Rust types and traits for the `ccat:hpc@0.3.0`
//! `hpc-plugin` world, and the export side of the 0.2.0 and 0.1.0 worlds so
//! that plugins built against them still load.
//!
//! The host interfaces (`process`, `kv`, `kube`) are 0.1.0's in every world,
//! so each has one implementation and one linker entry. Only the export
//! differs: 0.3.0's backend exports `submit-many`; 0.2.0's `job-spec` (which
//! 0.3.0 kept) carries an idempotency key and the backend exports
//! `find-job`. `plugin::Plugin` hides the difference from the rest of the
//! host.
//!
//! Imports are async (kv and processes wait on I/O) and trappable: an outer
//! `Err` traps the guest and is kept for host bugs and guest misuse; domain
//! errors travel in the WIT `result`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "ccat:hpc/hpc-plugin@0.3.0",
    // `tracing`: every host call gets a span naming its interface and function.
    imports: { default: async | trappable | tracing },
    exports: { default: async },
    // kv host functions return `Result<T, KvFault>` and use `?`; the fault
    // becomes the WIT `kv-error` in `kv::Host::convert_kv_error`.
    trappable_error_type: {
        "ccat:hpc/kv@0.1.0.kv-error" => crate::runtime::capabilities::kv::KvFault,
    },
});

/// The 0.2.0 world, for its export only: every import maps to the 0.3.0
/// world's bindings above (they are the same interfaces).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ccat:hpc/hpc-plugin@0.2.0",
        imports: { default: async | trappable | tracing },
        exports: { default: async },
        with: {
            "ccat:hpc/types@0.1.0": super::ccat::hpc0_1_0::types,
            "ccat:hpc/types@0.2.0": super::ccat::hpc0_2_0::types,
            "ccat:hpc/process@0.1.0": super::ccat::hpc0_1_0::process,
            "ccat:hpc/kv@0.1.0": super::ccat::hpc0_1_0::kv,
            "ccat:hpc/kube@0.1.0": super::ccat::hpc0_1_0::kube,
            "wasi:config/store@0.2.0-rc.1": super::wasi::config::store,
            "wasi:logging/logging@0.1.0-draft": super::wasi::logging::logging,
        },
    });
}

/// The 0.1.0 world, for its export only, like [`v0_2`].
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ccat:hpc/hpc-plugin@0.1.0",
        imports: { default: async | trappable | tracing },
        exports: { default: async },
        with: {
            "ccat:hpc/types@0.1.0": super::ccat::hpc0_1_0::types,
            "ccat:hpc/process@0.1.0": super::ccat::hpc0_1_0::process,
            "ccat:hpc/kv@0.1.0": super::ccat::hpc0_1_0::kv,
            "ccat:hpc/kube@0.1.0": super::ccat::hpc0_1_0::kube,
            "wasi:config/store@0.2.0-rc.1": super::wasi::config::store,
            "wasi:logging/logging@0.1.0-draft": super::wasi::logging::logging,
        },
    });
}

pub use ccat::hpc0_1_0::types::{
    BackendError, HpcJobInfo, JobLogs, JobStatus, PluginInfo, ResourceRequirements,
};
/// The host interfaces, the same in both contract versions.
pub use ccat::hpc0_1_0::{kube, kv, process};
pub use ccat::hpc0_2_0::types::JobSpec;

/// The contract this host speaks: plugins built against `ccat:hpc@0.3.x`
/// load, and those built against `0.2.x` (without `submit-many`: the host
/// submits their batches one spec at a time) and `0.1.x` (also without the
/// idempotency guarantee).
pub const CONTRACT_PACKAGE: &str = "ccat:hpc";
pub const CONTRACT_VERSION: &str = "0.3.0";
/// The older contracts that still load, newest first.
pub const CONTRACT_VERSIONS_OLD: [&str; 2] = ["0.2.0", "0.1.0"];
/// The version of the host interfaces (`process`, `kv`, `kube`) in all of them.
pub const HOST_INTERFACES_VERSION: &str = "0.1.0";

impl ResourceRequirements {
    /// No requirement: the backend's defaults.
    pub fn none() -> ResourceRequirements {
        ResourceRequirements {
            cpu: None,
            memory_gb: None,
            time_hours: None,
            gpus: None,
            nodes: None,
            extra: vec![],
        }
    }
}

impl JobStatus {
    /// Whether the job has ended (completed or failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

impl JobSpec {
    /// A spec that runs `argv` and sets nothing else: the base of a spec
    /// built in code (`JobSpec { job_name: .., ..JobSpec::command(["true"]) }`).
    pub fn command<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> JobSpec {
        JobSpec {
            execution_command: argv.into_iter().map(Into::into).collect(),
            image_ref: None,
            sif_path: None,
            input_dir: None,
            output_dir: None,
            workspace_dir: None,
            manifest_path: None,
            resource_requirements: ResourceRequirements::none(),
            environment_variables: vec![],
            job_name: None,
            idempotency_key: None,
        }
    }

    /// The spec as a 0.1.0 plugin takes it: without the idempotency key.
    pub fn to_v0_1(&self) -> ccat::hpc0_1_0::types::JobSpec {
        ccat::hpc0_1_0::types::JobSpec {
            execution_command: self.execution_command.clone(),
            image_ref: self.image_ref.clone(),
            sif_path: self.sif_path.clone(),
            input_dir: self.input_dir.clone(),
            output_dir: self.output_dir.clone(),
            workspace_dir: self.workspace_dir.clone(),
            manifest_path: self.manifest_path.clone(),
            resource_requirements: self.resource_requirements.clone(),
            environment_variables: self.environment_variables.clone(),
            job_name: self.job_name.clone(),
        }
    }
}
