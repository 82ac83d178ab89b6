//! Local jobs: each runs under a small supervisor process of its own that
//! outlives the host and records the job's end in its job folder.
//! Nothing here knows of plugins: the process capability uses it.

pub mod jobs;
pub mod reaper;
pub mod slots;
pub mod supervisor;
pub mod zygote;
