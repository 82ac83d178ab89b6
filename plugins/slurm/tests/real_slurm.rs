//! The backend against a real SLURM (scripts/slurm-testcluster.sh), natively:
//! the same `backend` functions the component runs, over a host that runs
//! the programs with `std::process` and keeps the kv store in memory.
//!
//! ```text
//! scripts/slurm-testcluster.sh
//! cargo test -p hpc-plugin-slurm --test real_slurm -- --include-ignored
//! ```

use hpc_plugin_sdk::host::kv::KvError;
use hpc_plugin_sdk::host::process::{ProcessError, RunOutput, RunRequest};
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobSpec, JobStatus, ResourceRequirements};
use hpc_plugin_slurm::backend;
use hpc_plugin_slurm::host::Host;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the real programs; settings and kv in memory.
struct NativeHost {
    settings: HashMap<String, String>,
    kv: HashMap<String, Vec<u8>>,
    counter: u64,
}

impl NativeHost {
    fn new() -> Self {
        let settings =
            HashMap::from([(backend::SETTING_PARTITION.to_string(), "debug".to_string())]);
        NativeHost {
            settings,
            kv: HashMap::new(),
            counter: 0,
        }
    }
}

impl Host for NativeHost {
    fn setting(&self, key: &str) -> Option<String> {
        self.settings.get(key).cloned()
    }
    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError> {
        let mut child = Command::new(&req.program)
            .args(&req.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ProcessError::Failed(e.to_string()))?;
        let deadline =
            Instant::now() + Duration::from_millis(req.timeout_ms.unwrap_or(20_000).into());
        while child
            .try_wait()
            .map_err(|e| ProcessError::Failed(e.to_string()))?
            .is_none()
        {
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(ProcessError::TimedOut(format!(
                    "`{}` ran out of time",
                    req.program
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ProcessError::Failed(e.to_string()))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(RunOutput {
            exit_code: out.status.code(),
            signal: out.status.signal(),
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: false,
        })
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.kv.get(key).cloned())
    }
    fn kv_set(&mut self, key: &str, value: &[u8], _ttl: Option<u32>) -> Result<(), KvError> {
        self.kv.insert(key.into(), value.into());
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError> {
        Ok(self.kv.remove(key).is_some())
    }
    fn warn(&mut self, msg: &str) {
        eprintln!("warn: {msg}");
    }
    fn now_millis(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }
    fn random(&mut self) -> u64 {
        self.counter += 1;
        u64::from(std::process::id()) << 20 | self.counter
    }
}

fn workspace(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hpc-plugin-slurm-real-{tag}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec(tag: &str, argv: &[&str]) -> JobSpec {
    JobSpec {
        execution_command: argv.iter().map(|s| s.to_string()).collect(),
        image_ref: None,
        sif_path: None,
        input_dir: None,
        output_dir: None,
        workspace_dir: Some(workspace(tag).to_str().unwrap().into()),
        manifest_path: None,
        resource_requirements: ResourceRequirements {
            cpu: Some(1),
            memory_gb: Some(0.25),
            time_hours: Some(0.1),
            gpus: None,
            nodes: None,
            extra: vec![],
        },
        environment_variables: vec![],
        job_name: Some("it".into()),
        idempotency_key: None,
    }
}

/// Poll until the job reaches a state `done` accepts, or 60 s pass.
fn wait_for(host: &mut NativeHost, id: &str, done: impl Fn(&HpcJobInfo) -> bool) -> HpcJobInfo {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = backend::statuses(host, &[id.to_string()]).expect("status query");
        let info = all.pop().unwrap();
        if let Ok(info) = &info
            && done(info)
        {
            return info.clone();
        }
        assert!(Instant::now() < end, "job {id} still {info:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs slurm (sbatch)"]
fn lifecycle_on_a_real_cluster() {
    let mut host = NativeHost::new();

    // A job whose argv and environment would break a naive script.
    let mut ok = spec(
        "life",
        &[
            "/bin/bash",
            "-c",
            r#"printf '[%s]' "$@"; echo; echo "V=$V"; echo err >&2"#,
            "x",
            "it's",
            "$(id)",
            "a\nb",
        ],
    );
    ok.environment_variables = vec![("V".into(), "`date`; $HOME 'q'".into())];
    ok.job_name = Some("it ok\n#SBATCH --partition=nope".into());
    let ok_id = backend::submit(&mut host, &ok).unwrap();
    let failing = backend::submit(
        &mut host,
        &spec("life", &["/bin/sh", "-c", "sleep 1; exit 3"]),
    )
    .unwrap();
    let sleeper = backend::submit(&mut host, &spec("life", &["sleep", "300"])).unwrap();
    let mut later = spec("life", &["true"]);
    later.resource_requirements.extra = vec![("begin".into(), "now+1hour".into())];
    let pending = backend::submit(&mut host, &later).unwrap();

    let info = wait_for(&mut host, &ok_id, |i| i.status.is_terminal());
    assert_eq!(
        (info.status, info.exit_code),
        (JobStatus::Completed, Some(0)),
        "{info:?}"
    );
    assert!(
        info.wall_time_seconds.is_some() && info.cpu_hours.is_some(),
        "{info:?}"
    );
    let logs = backend::logs(&mut host, &ok_id).unwrap();
    assert_eq!(logs.stdout, "[it's][$(id)][a\nb]\nV=`date`; $HOME 'q'\n");
    assert_eq!(logs.stderr, "err\n");

    let info = wait_for(&mut host, &failing, |i| i.status.is_terminal());
    assert_eq!(
        (info.status, info.exit_code),
        (JobStatus::Failed, Some(3)),
        "{info:?}"
    );
    assert_eq!(info.reason.as_deref(), Some("exit code 3"));

    wait_for(&mut host, &sleeper, |i| i.status == JobStatus::Running);
    backend::cancel(&mut host, &sleeper).unwrap();
    let info = wait_for(&mut host, &sleeper, |i| i.status.is_terminal());
    assert_eq!(info.native_state.as_deref(), Some("CANCELLED"), "{info:?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("cancelled"),
        "{info:?}"
    );

    let all = backend::statuses(
        &mut host,
        &[
            pending.clone(),
            "999999".into(),
            "nope".into(),
            ok_id.clone(),
        ],
    )
    .unwrap();
    let p = all[0].as_ref().unwrap();
    assert_eq!(
        (p.status, p.reason.as_deref()),
        (JobStatus::Pending, Some("BeginTime"))
    );
    assert!(matches!(all[1], Err(BackendError::NotFound(_))));
    assert!(matches!(all[2], Err(BackendError::NotFound(_))));
    assert_eq!(all[3].as_ref().unwrap().status, JobStatus::Completed);
    assert!(matches!(
        backend::statuses(&mut host, &["999999".into()]).unwrap()[0],
        Err(BackendError::NotFound(_))
    ));
    backend::cancel(&mut host, &pending).unwrap();
    // Cancelling an ended job is fine.
    backend::cancel(&mut host, &ok_id).unwrap();
    std::fs::remove_dir_all(workspace("life")).unwrap();
}

#[test]
#[ignore = "needs slurm (sbatch)"]
fn refusals_on_a_real_cluster() {
    let mut host = NativeHost::new();
    host.settings
        .insert(backend::SETTING_PARTITION.into(), "nosuch".into());
    let e = backend::submit(&mut host, &spec("refuse", &["true"])).unwrap_err();
    assert!(
        matches!(&e, BackendError::InvalidRequest(m) if m.contains("invalid partition")),
        "{e:?}"
    );
    host.settings
        .insert(backend::SETTING_PARTITION.into(), "debug".into());
    let mut big = spec("refuse", &["true"]);
    big.resource_requirements.cpu = Some(4096);
    let e = backend::submit(&mut host, &big).unwrap_err();
    assert!(
        matches!(&e, BackendError::InvalidRequest(m) if m.contains("More processors requested")),
        "{e:?}"
    );
    let mut big = spec("refuse", &["true"]);
    big.resource_requirements.memory_gb = Some(100_000.0);
    let e = backend::submit(&mut host, &big).unwrap_err();
    assert!(matches!(e, BackendError::InvalidRequest(_)), "{e:?}");
    std::fs::remove_dir_all(workspace("refuse")).unwrap();
}

#[test]
#[ignore = "needs slurm (sbatch)"]
fn a_keyed_job_is_found_by_its_key() {
    let mut host = NativeHost::new();
    let key = format!("it-find-{}-{}", std::process::id(), now_secs());
    let since = now_secs() as f64;
    assert_eq!(backend::find_job(&mut host, &key, since).unwrap(), None);

    let mut keyed = spec("find", &["/bin/true"]);
    keyed.idempotency_key = Some(key.clone());
    // The spec's own comment stays, after the key.
    keyed.resource_requirements.extra = vec![("comment".into(), "night 42".into())];
    let id = backend::submit(&mut host, &keyed).unwrap();
    // In the controller (squeue) while it runs and for MinJobAge after.
    assert_eq!(
        backend::find_job(&mut host, &key, since)
            .unwrap()
            .as_deref(),
        Some(id.as_str())
    );
    // A key that is a prefix of this one finds nothing.
    assert_eq!(
        backend::find_job(&mut host, &key[..key.len() - 1], since).unwrap(),
        None
    );
    wait_for(&mut host, &id, |i| i.status == JobStatus::Completed);
    assert_eq!(
        backend::find_job(&mut host, &key, since)
            .unwrap()
            .as_deref(),
        Some(id.as_str())
    );
    std::fs::remove_dir_all(workspace("find")).unwrap();
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `submit-many` on the real cluster: one array for one shape, each element
/// a job of its own (status from squeue and from sacct's element rows,
/// logs, cancel, requeue), found by its key when the store has no id yet,
/// and a refused array failing only its own elements.
#[test]
#[ignore = "needs slurm (sbatch)"]
fn an_array_on_a_real_cluster() {
    use hpc_plugin_slurm::batch;
    let mut host = NativeHost::new();
    let run = format!("it-array-{}-{}", std::process::id(), now_secs());
    let since = now_secs() as f64;
    let hostile = "it's \"q\" $(id) `id`; ;; esac\n0) *";
    let mut specs: Vec<JobSpec> = (0..4)
        .map(|i| {
            let mut s = spec(
                "array",
                &[
                    "/bin/bash",
                    "-c",
                    r#"printf '[%s]' "$@"; echo; echo "V=$V"; echo "e$1" >&2"#,
                    "x",
                    &i.to_string(),
                    hostile,
                ],
            );
            s.environment_variables = vec![("V".into(), format!("{hostile}{i}"))];
            s.idempotency_key = Some(format!("{run}/{i}"));
            s
        })
        .collect();
    specs[2].execution_command = vec!["sleep".into(), "300".into()];
    specs[3].execution_command = vec!["sleep".into(), "300".into()];
    // A shape the scheduler refuses at submit (this cluster does not
    // enforce accounts, so an impossible cpu count).
    let mut refused = spec("array", &["true"]);
    refused.resource_requirements.cpu = Some(4096);
    specs.push(refused.clone());
    specs.push(refused);

    let r = batch::submit_many(&mut host, &specs);
    let ids: Vec<String> = r[..4].iter().map(|r| r.clone().unwrap()).collect();
    let array = ids[0].split_once('_').unwrap().0.to_string();
    assert_eq!(
        ids,
        (0..4).map(|i| format!("{array}_{i}")).collect::<Vec<_>>()
    );
    for e in &r[4..] {
        assert!(matches!(e, Err(BackendError::InvalidRequest(_))), "{e:?}");
    }

    for (i, id) in ids[..2].iter().enumerate() {
        let info = wait_for(&mut host, id, |i| i.status.is_terminal());
        assert_eq!(info.status, JobStatus::Completed, "{info:?}");
        let logs = backend::logs(&mut host, id).unwrap();
        assert_eq!(logs.stdout, format!("[{i}][{hostile}]\nV={hostile}{i}\n"));
        assert_eq!(logs.stderr, format!("e{i}\n"));
    }
    // Requeued, an element is pending again under its id, never final.
    wait_for(&mut host, &ids[2], |i| i.status == JobStatus::Running);
    let out = Command::new("scontrol")
        .args(["requeue", &ids[2]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for _ in 0..10 {
        let s = backend::statuses(&mut host, &[ids[2].clone()])
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        assert!(!s.status.is_terminal(), "{s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Cancel one element: the others are untouched.
    backend::cancel(&mut host, &ids[2]).unwrap();
    let info = wait_for(&mut host, &ids[2], |i| i.status.is_terminal());
    assert_eq!(info.native_state.as_deref(), Some("CANCELLED"), "{info:?}");
    let all = backend::statuses(&mut host, &ids).unwrap();
    assert_eq!(all[0].as_ref().unwrap().status, JobStatus::Completed);
    assert!(
        !all[3].as_ref().unwrap().status.is_terminal(),
        "{:?}",
        all[3]
    );

    // find-job: from the store; then with the id forgotten, by the tag.
    assert_eq!(
        backend::find_job(&mut host, &format!("{run}/3"), since).unwrap(),
        Some(ids[3].clone())
    );
    let tag = host
        .kv
        .keys()
        .find_map(|k| k.strip_prefix("batch/"))
        .unwrap()
        .to_owned();
    let mut rec: batch::ArrayRecord =
        serde_json::from_slice(&host.kv[&format!("batch/{tag}")]).unwrap();
    rec.array_id = None;
    host.kv
        .insert(format!("batch/{tag}"), serde_json::to_vec(&rec).unwrap());
    assert_eq!(
        backend::find_job(&mut host, &format!("{run}/1"), since).unwrap(),
        Some(ids[1].clone())
    );
    backend::cancel(&mut host, &ids[3]).unwrap();
    wait_for(&mut host, &ids[3], |i| i.status.is_terminal());
    std::fs::remove_dir_all(workspace("array")).unwrap();
}
