//! The test-only plugins, built by this crate's build script: a
//! dev-dependency of `hpc-host`, whose tests install them from [`DIR`].

/// The folder holding `hostile.wasm`, `misbehave.wasm`, `wrong-version.wasm`,
/// `contract-0-1.wasm` and `broken.wasm`.
pub const DIR: &str = env!("HPC_HOST_TEST_PLUGINS");
