//! The exports a test plugin has to have but does not test: each plugin
//! includes this file (`#[path]`) and calls [`plain_exports!`] inside its
//! `Guest` impl, which writes them against the contract types in scope there
//! (the SDK's, or a frozen contract's own bindings).

/// `get-statuses` as one `get-status` per id, each its own answer; a
/// `cancel` that has nothing to stop; `describe` naming the plugin; and with
/// `logs: none`, a `get-logs` for jobs that print nothing.
macro_rules! plain_exports {
    (name: $name:literal, description: $description:literal, logs: none $(,)?) => {
        plain_exports!(name: $name, description: $description);

        fn get_logs(_job_id: String) -> Result<JobLogs, BackendError> {
            Ok(JobLogs {
                stdout: String::new(),
                stderr: String::new(),
            })
        }
    };
    (name: $name:literal, description: $description:literal $(,)?) => {
        fn get_statuses(
            job_ids: Vec<String>,
        ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
            Ok(job_ids.into_iter().map(Self::get_status).collect())
        }

        fn cancel(_job_id: String) -> Result<(), BackendError> {
            Ok(())
        }

        fn describe() -> PluginInfo {
            PluginInfo {
                name: $name.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: $description.into(),
                settings: vec![],
            }
        }
    };
}
