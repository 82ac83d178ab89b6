//! [`Backend`]: a plugin's operations over a [`Host`], and
//! [`export_backend!`](crate::export_backend) to make them the component's
//! exports with the real host. Plugins write the trait, not `Guest`, so the
//! same functions run natively in unit tests over `fake::FakeHost`.

use crate::host::Host;
use crate::{BackendError, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

/// A backend's operations, each over the host it is given.
pub trait Backend {
    /// Submit a job; its id. With `spec.idempotency_key`, attach the key to
    /// the job where [`Backend::find_job`] can see it (see
    /// [`crate::idempotency`]); the host has made sure no other submit with
    /// this key is at work.
    fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError>;
    /// Submit many jobs: per spec, in order, its id or its own error (a
    /// refused spec does not stop the others). Each element is a job of its
    /// own, keyed by its own `idempotency_key`. The default submits one at a
    /// time; a backend with a cheaper way (a SLURM job array) overrides it.
    fn submit_many(h: &mut impl Host, specs: &[JobSpec]) -> Vec<Result<String, BackendError>> {
        specs.iter().map(|spec| Self::submit(h, spec)).collect()
    }
    /// The job a submit with this idempotency key made, if the scheduler
    /// knows one; none only when no such job exists (`unavailable` when the
    /// scheduler cannot tell). `since`: Unix seconds when that submit began.
    fn find_job(h: &mut impl Host, key: &str, since: f64) -> Result<Option<String>, BackendError>;
    /// The state of each job, in the order asked; the outer error fails them all.
    fn statuses(
        h: &mut impl Host,
        ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError>;
    /// Cancel a job.
    fn cancel(h: &mut impl Host, id: &str) -> Result<(), BackendError>;
    /// A job's output.
    fn logs(h: &mut impl Host, id: &str) -> Result<JobLogs, BackendError>;
    /// What the plugin is, for `plugins inspect`.
    fn describe() -> PluginInfo;
}

/// Implement the contract's `Guest` for a [`Backend`] with the real host,
/// `get-status` as the one-id case of `statuses`, and export it from the
/// component. Natively (`cargo test`) nothing is exported, so the crate's
/// rlib links without the component's symbols.
///
/// ```ignore
/// struct MySite;
/// impl hpc_plugin_sdk::backend::Backend for MySite { /* ... */ }
/// hpc_plugin_sdk::export_backend!(MySite);
/// ```
#[macro_export]
macro_rules! export_backend {
    ($ty:ident) => {
        impl $crate::Guest for $ty {
            fn submit(spec: $crate::JobSpec) -> Result<String, $crate::BackendError> {
                <$ty as $crate::backend::Backend>::submit(&mut $crate::host::SdkHost, &spec)
            }
            fn submit_many(
                specs: Vec<$crate::JobSpec>,
            ) -> Vec<Result<String, $crate::BackendError>> {
                <$ty as $crate::backend::Backend>::submit_many(&mut $crate::host::SdkHost, &specs)
            }
            fn find_job(
                idempotency_key: String,
                since: f64,
            ) -> Result<Option<String>, $crate::BackendError> {
                <$ty as $crate::backend::Backend>::find_job(
                    &mut $crate::host::SdkHost,
                    &idempotency_key,
                    since,
                )
            }
            fn get_status(job_id: String) -> Result<$crate::HpcJobInfo, $crate::BackendError> {
                $crate::single(<$ty as $crate::backend::Backend>::statuses(
                    &mut $crate::host::SdkHost,
                    &[job_id],
                ))
            }
            fn get_statuses(
                job_ids: Vec<String>,
            ) -> Result<Vec<Result<$crate::HpcJobInfo, $crate::BackendError>>, $crate::BackendError>
            {
                <$ty as $crate::backend::Backend>::statuses(&mut $crate::host::SdkHost, &job_ids)
            }
            fn cancel(job_id: String) -> Result<(), $crate::BackendError> {
                <$ty as $crate::backend::Backend>::cancel(&mut $crate::host::SdkHost, &job_id)
            }
            fn get_logs(job_id: String) -> Result<$crate::JobLogs, $crate::BackendError> {
                <$ty as $crate::backend::Backend>::logs(&mut $crate::host::SdkHost, &job_id)
            }
            fn describe() -> $crate::PluginInfo {
                <$ty as $crate::backend::Backend>::describe()
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::export!($ty);
    };
}

/// `get-status` as the one-id case of `get-statuses`, for plugins whose
/// batch query is the only query they have.
pub fn single(
    all: Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError>,
) -> Result<HpcJobInfo, BackendError> {
    all?.pop()
        .unwrap_or_else(|| Err(BackendError::Internal("no status returned".into())))
}
