//! The operations, over the SDK's [`Host`] trait: the component passes the
//! real host, the tests below a fake one.

use crate::Template;
use hpc_plugin_sdk::backend::Backend;
use hpc_plugin_sdk::host::Host;
use hpc_plugin_sdk::host::process::{RunOutput, RunRequest};
use hpc_plugin_sdk::resources::{hours_to_seconds, memory_mib};
use hpc_plugin_sdk::spec::check_command;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, JobStatus, PluginInfo, record};
use serde::{Deserialize, Serialize};

/// Setting: each tool's timeout in milliseconds (default [`DEFAULT_TIMEOUT_MS`]).
pub const SETTING_TIMEOUT: &str = "TEMPLATE_TIMEOUT_MS";
/// Ten seconds: a scheduler slower than that is better reported as unavailable.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;

/// What the kv store keeps per job (here only for `get-logs` to tell our jobs
/// from others; keep what your backend needs to find a job again).
#[derive(Serialize, Deserialize)]
pub struct JobRecord {
    pub job_name: Option<String>,
    pub submitted_at_ms: u64,
}

fn key(id: &str) -> String {
    format!("job/{id}")
}

/// Ids are what the scheduler printed; refuse anything else before it is
/// passed to a tool.
fn check_id(id: &str) -> Result<(), BackendError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(BackendError::NotFound(format!(
            "no job `{}`",
            id.escape_debug()
        )))
    }
}

/// Run a tool; a non-zero exit is the scheduler's refusal, in its words.
fn run(h: &mut impl Host, program: &str, args: Vec<String>) -> Result<String, BackendError> {
    let timeout = h
        .setting(SETTING_TIMEOUT)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    let req = RunRequest {
        program: program.into(),
        args,
        env: vec![],
        stdin: None,
        timeout_ms: Some(timeout),
    };
    let RunOutput {
        exit_code,
        stdout,
        stderr,
        ..
    } = h.run(&req)?;
    if exit_code != Some(0) {
        return Err(BackendError::Unavailable(format!(
            "`{program}` failed: {}",
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// `ID STATE [EXIT]`.
fn parse_status(id: &str, line: &str) -> Result<HpcJobInfo, BackendError> {
    let mut words = line.split_whitespace().skip(1);
    let state = words.next().unwrap_or_default();
    let status = match state {
        "PENDING" => JobStatus::Pending,
        "RUNNING" => JobStatus::Running,
        "COMPLETED" => JobStatus::Completed,
        "FAILED" => JobStatus::Failed,
        other => {
            return Err(BackendError::Internal(format!(
                "`status` printed an unknown state `{other}`"
            )));
        }
    };
    Ok(HpcJobInfo {
        job_id: id.into(),
        status,
        exit_code: words.next().and_then(|w| w.parse().ok()),
        wall_time_seconds: None,
        cpu_hours: None,
        peak_memory_gb: None,
        native_state: Some(state.into()),
        reason: None,
    })
}

impl Backend for Template {
    /// Submit `spec`; the scheduler's job id.
    fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> {
        let invalid = BackendError::InvalidRequest;
        check_command(&spec.execution_command, "execution_command").map_err(invalid)?;
        let r = &spec.resource_requirements;
        let mut args = Vec::new();
        if let Some(hours) = r.time_hours {
            let seconds = hours_to_seconds(hours, "time_hours").map_err(invalid)?;
            args.extend(["--time".to_string(), seconds.to_string()]);
        }
        if let Some(gb) = r.memory_gb {
            let mib = memory_mib(gb, "memory_gb").map_err(invalid)?;
            args.extend(["--mem-mib".to_string(), mib.to_string()]);
        }
        // Attach the idempotency key to the job where `find_job` can see it
        // (here a `--tag`; SLURM uses the comment, Kubernetes a label).
        if let Some(k) = &spec.idempotency_key {
            args.extend(["--tag".to_string(), k.clone()]);
        }
        args.push("--".into());
        args.extend(spec.execution_command.iter().cloned());
        let id = run(h, "submit", args)?.trim().to_owned();
        check_id(&id)
            .map_err(|_| BackendError::Internal(format!("`submit` printed no job id: `{id}`")))?;
        let rec = JobRecord {
            job_name: spec.job_name.clone(),
            submitted_at_ms: h.now_millis(),
        };
        // The job exists now: a store failure must not make the caller submit it again.
        if let Err(e) =
            record::encode(&rec).and_then(|b| h.kv_set(&key(&id), &b, None).map_err(Into::into))
        {
            h.warn(&format!("job {id} was submitted but not recorded: {e:?}"));
        }
        Ok(id)
    }

    /// The job whose tag is `key` (`find --tag KEY` prints its id, or
    /// nothing). Print nothing only when no such job exists: when the
    /// scheduler cannot tell, fail (`unavailable`), or the host would submit
    /// the job a second time.
    fn find_job(h: &mut impl Host, key: &str, _since: f64) -> Result<Option<String>, BackendError> {
        let out = run(h, "find", vec!["--tag".into(), key.into()])?;
        let id = out.trim();
        if id.is_empty() {
            return Ok(None);
        }
        check_id(id)
            .map_err(|_| BackendError::Internal(format!("`find` printed no job id: `{id}`")))?;
        Ok(Some(id.to_owned()))
    }

    /// The state of each job, in order, from one `status` call.
    fn statuses(
        h: &mut impl Host,
        ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        let valid: Vec<String> = ids
            .iter()
            .filter(|i| check_id(i).is_ok())
            .cloned()
            .collect();
        let out = if valid.is_empty() {
            String::new()
        } else {
            run(h, "status", valid)?
        };
        Ok(ids
            .iter()
            .map(|id| {
                check_id(id)?;
                let line = out
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(id.as_str()));
                let line = line.ok_or_else(|| {
                    BackendError::NotFound(format!("the scheduler does not know job `{id}`"))
                })?;
                parse_status(id, line)
            })
            .collect())
    }

    /// Cancel a job.
    fn cancel(h: &mut impl Host, id: &str) -> Result<(), BackendError> {
        check_id(id)?;
        run(h, "cancel", vec![id.into()]).map(drop)
    }

    /// A job's output (the scheduler merges stdout and stderr).
    fn logs(h: &mut impl Host, id: &str) -> Result<JobLogs, BackendError> {
        check_id(id)?;
        if h.kv_get(&key(id))?.is_none() {
            return Err(BackendError::NotFound(format!(
                "no record of job `{id}`: only jobs submitted through this backend have logs"
            )));
        }
        Ok(JobLogs {
            stdout: run(h, "logs", vec![id.into()])?,
            stderr: String::new(),
        })
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "template".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "a site scheduler driven through its command-line tools".into(),
            settings: vec![SETTING_TIMEOUT.into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpc_plugin_sdk::fake::{self, FakeHost, fail, ok};

    fn spec(argv: &[&str]) -> JobSpec {
        let mut s = fake::spec(argv);
        s.resource_requirements.memory_gb = Some(1.5);
        s.resource_requirements.time_hours = Some(0.5);
        s
    }

    #[test]
    fn a_keyed_submit_tags_the_job_and_find_reads_the_tag() {
        let mut h = FakeHost::new();
        h.answer("submit", ok("18\n"));
        let mut s = spec(&["true"]);
        s.idempotency_key = Some("exec-7".into());
        assert_eq!(Template::submit(&mut h, &s).unwrap(), "18");
        assert_eq!(h.calls[0].args[4..7], ["--tag", "exec-7", "--"]);
        h.answer("find", ok("18\n"));
        assert_eq!(
            Template::find_job(&mut h, "exec-7", 0.0)
                .unwrap()
                .as_deref(),
            Some("18")
        );
        h.answer("find", ok(""));
        assert_eq!(Template::find_job(&mut h, "exec-8", 0.0).unwrap(), None);
        h.answer("find", fail("scheduler down"));
        assert!(matches!(
            Template::find_job(&mut h, "exec-8", 0.0),
            Err(BackendError::Unavailable(_))
        ));
    }

    #[test]
    fn submit_passes_resources_and_argv_and_records_the_job() {
        let mut h = FakeHost::new();
        h.answer("submit", ok("17\n"));
        assert_eq!(
            Template::submit(&mut h, &spec(&["echo", "a b"])).unwrap(),
            "17"
        );
        assert_eq!(
            h.calls[0].args,
            ["--time", "1800", "--mem-mib", "1536", "--", "echo", "a b"]
        );
        assert_eq!(h.calls[0].timeout_ms, Some(DEFAULT_TIMEOUT_MS));
        assert!(h.kv.contains_key("job/17"));
    }

    #[test]
    fn bad_requests_run_nothing() {
        let mut h = FakeHost::new();
        let mut s = spec(&["true"]);
        s.resource_requirements.time_hours = Some(f64::NAN);
        assert!(
            matches!(Template::submit(&mut h, &s), Err(BackendError::InvalidRequest(m)) if m.contains("time_hours"))
        );
        assert!(matches!(
            Template::submit(&mut h, &spec(&[])),
            Err(BackendError::InvalidRequest(_))
        ));
        assert!(h.calls.is_empty());
    }

    #[test]
    fn statuses_come_from_one_call() {
        let mut h = FakeHost::new();
        h.answer("status", ok("17 COMPLETED 0\n18 RUNNING\n"));
        let ids = ["17".to_string(), "18".into(), "19".into(), "-x".into()];
        let all = Template::statuses(&mut h, &ids).unwrap();
        assert_eq!(h.calls.len(), 1);
        assert_eq!(h.calls[0].args, ["17", "18", "19"]);
        let done = all[0].as_ref().unwrap();
        assert_eq!(
            (done.status, done.exit_code),
            (JobStatus::Completed, Some(0))
        );
        assert_eq!(all[1].as_ref().unwrap().status, JobStatus::Running);
        assert!(matches!(all[2], Err(BackendError::NotFound(_))));
        assert!(matches!(all[3], Err(BackendError::NotFound(_))));
    }

    #[test]
    fn a_failing_tool_is_unavailable_in_its_own_words() {
        let mut h = FakeHost::new();
        h.answer("cancel", fail("scheduler is down"));
        assert!(
            matches!(Template::cancel(&mut h, "17"), Err(BackendError::Unavailable(m)) if m.contains("scheduler is down"))
        );
    }

    #[test]
    fn logs_only_for_our_jobs() {
        let mut h = FakeHost::new();
        assert!(matches!(
            Template::logs(&mut h, "17"),
            Err(BackendError::NotFound(_))
        ));
        h.kv.insert("job/17".into(), b"{}".to_vec());
        h.answer("logs", ok("hello\n"));
        assert_eq!(Template::logs(&mut h, "17").unwrap().stdout, "hello\n");
    }
}
