//! A hostile plugin: `get-status(<attack>[:<arg>])` carries out one attack on
//! the host and reports what happened. `Ok` means the attack got through;
//! the tests expect an error (or a contained trap) for every one. Any other
//! id answers normally, so a test can check that the host still works.

#[macro_use]
#[path = "../../common/exports.rs"]
mod common_exports;
#[path = "../../common/runaway.rs"]
mod runaway;

use hpc_plugin_sdk::host::kube::{self, Propagation};
use hpc_plugin_sdk::host::{kv, process};
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, JobStatus, PluginInfo, setting};

struct Hostile;

fn got_through(what: String) -> Result<HpcJobInfo, BackendError> {
    Ok(HpcJobInfo {
        job_id: "attack".into(),
        status: JobStatus::Completed,
        exit_code: None,
        wall_time_seconds: None,
        cpu_hours: None,
        peak_memory_gb: None,
        native_state: Some("GOT-THROUGH".into()),
        reason: Some(what),
    })
}

fn fs_error(e: std::io::Error) -> BackendError {
    BackendError::Denied(format!("filesystem: {e}"))
}

fn run(program: &str) -> Result<process::RunOutput, BackendError> {
    let req = process::RunRequest {
        program: program.into(),
        args: vec![],
        env: vec![],
        stdin: None,
        timeout_ms: Some(5000),
    };
    Ok(process::run(&req)?)
}

/// Recurses without end on purpose: the host must trap it (stack limit).
/// A granted shell that starts a tree of `sleep ARG`s under a 0.5 s timeout.
fn sleep_tree(arg: &str) -> Result<HpcJobInfo, BackendError> {
    let req = process::RunRequest {
        program: "sh".into(),
        args: vec!["-c".into(), format!("sleep {arg} & sleep {arg}; wait")],
        env: vec![],
        stdin: None,
        timeout_ms: Some(500),
    };
    got_through(format!("{:?}", process::run(&req)?.exit_code))
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 16]);
    recurse(depth + 1) + pad[3]
}

fn attack(name: &str, arg: &str) -> Result<HpcJobInfo, BackendError> {
    match name {
        "read-passwd" => got_through(std::fs::read_to_string("/etc/passwd").map_err(fs_error)?),
        "read-file" => got_through(std::fs::read_to_string(arg).map_err(fs_error)?),
        "write-file" => {
            std::fs::write(arg, b"hostile").map_err(fs_error)?;
            got_through(format!("wrote {arg}"))
        }
        "run" => got_through(format!("ran {arg}: {:?}", run(arg)?.exit_code)),
        "env-preload" => {
            let req = process::RunRequest {
                program: arg.into(),
                args: vec![],
                env: vec![("LD_PRELOAD".into(), "/tmp/evil.so".into())],
                stdin: None,
                timeout_ms: None,
            };
            got_through(format!(
                "ran with LD_PRELOAD: {:?}",
                process::run(&req)?.exit_code
            ))
        }
        "spawn-flood" => {
            for i in 0..1000 {
                run(arg).map_err(|e| BackendError::Denied(format!("after {i} spawns: {e:?}")))?;
            }
            got_through("1000 spawns".into())
        }
        "kv-read" => match kv::get(arg)? {
            Some(v) => got_through(String::from_utf8_lossy(&v).into_owned()),
            None => Err(BackendError::NotFound(format!("no key {arg}"))),
        },
        "kv-write" => {
            kv::set(arg, b"hostile", None)?;
            let keys = kv::list_keys("")?;
            Err(BackendError::Denied(format!(
                "wrote {arg}; visible keys: {keys:?}"
            )))
        }
        "kube-create" => {
            let body = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"x"}}"#;
            got_through(kube::create("batch/v1", "Job", arg, body)?)
        }
        "kube-delete" => got_through(kube::delete(
            "v1",
            "Secret",
            arg,
            "x",
            Propagation::Background,
        )?),
        "loop" => runaway::spin(),
        "alloc" => runaway::hoard(),
        "huge-string" => got_through("x".repeat(arg.parse().unwrap_or(48 << 20))),
        "stack-overflow" => got_through(recurse(0).to_string()),
        "panic" => panic!("hostile panic"),
        "setting" => got_through(setting(arg).unwrap_or_default()),
        // Class 1: what the plugin says.
        "ctl-error" => Err(BackendError::Internal(format!(
            "\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\r\n{arg}  completed"
        ))),
        "ctl-status" => Ok(HpcJobInfo {
            job_id: "ctl\x1b[2J".into(),
            status: JobStatus::Completed,
            exit_code: None,
            wall_time_seconds: None,
            cpu_hours: None,
            peak_memory_gb: None,
            native_state: Some("\x1b]0;title\x07".into()),
            reason: Some(format!("\r\n{arg}  completed")),
        }),
        "huge-error" => Err(BackendError::Internal(
            "e".repeat(arg.parse().unwrap_or(33 << 20)),
        )),
        "log-flood" => {
            use hpc_plugin_sdk::wasi::logging::logging::{Level, log};
            let line = format!("flood\nFORGED {} line\x1b[31m", "x".repeat(500));
            let context = format!("ctx\nFORGED context {}", "c".repeat(1000));
            for _ in 0..arg.parse::<u32>().unwrap_or(100_000) {
                log(Level::Warn, &context, &line);
            }
            got_through("logged".into())
        }
        // Class 3: programs.
        "env" => {
            let req = process::RunRequest {
                program: "ok".into(),
                args: vec![],
                env: vec![(arg.into(), "/dev/stdin".into())],
                stdin: None,
                timeout_ms: None,
            };
            got_through(format!(
                "ran with {arg}: {:?}",
                process::run(&req)?.exit_code
            ))
        }
        "sleep-tree" => {
            // A granted shell starts a tree and outlives its timeout.
            sleep_tree(arg)
        }
        "spin-then-tree" => {
            // Compute until 0.7 s have passed, then start a tree under a
            // 0.5 s timeout: the call's `wall_seconds` (1 s) ends first, and
            // the host drops the call while the program still runs.
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(700) {
                std::hint::black_box(0u64);
            }
            sleep_tree(arg)
        }
        // Class 2: what the host allocates for the plugin.
        "kv-many" => {
            kv::set("big", &vec![1u8; 1 << 20], Some(60))?;
            let keys: Vec<String> = (0..arg.parse().unwrap_or(512))
                .map(|_| "big".into())
                .collect();
            let got = kv::get_many(&keys)?;
            got_through(format!("{} values", got.len()))
        }
        "kv-write-flood" => {
            let value = vec![2u8; 1 << 20];
            for i in 0..arg.parse().unwrap_or(200u32) {
                kv::set(&format!("flood/{i}"), &value, Some(60))
                    .map_err(|e| BackendError::Denied(format!("after {i} writes: {e:?}")))?;
            }
            got_through("wrote all".into())
        }
        // Across calls: one value of `<bytes>` at `q/<name>` per call, kept
        // (no TTL), until the quota (`kv_max_bytes`, `kv_max_keys`) refuses.
        "kv-put" => {
            let (name, bytes) = arg.rsplit_once(':').unwrap_or((arg, "1048576"));
            let value = vec![3u8; bytes.parse().unwrap_or(1 << 20)];
            kv::set(&format!("q/{name}"), &value, None)
                .map_err(|e| BackendError::Denied(format!("put q/{name}: {e:?}")))?;
            got_through(format!("put q/{name}"))
        }
        "kv-count" => {
            let n = kv::increment(&format!("q/{arg}"), 1)
                .map_err(|e| BackendError::Denied(format!("count q/{arg}: {e:?}")))?;
            got_through(format!("q/{arg} = {n}"))
        }
        "kv-del" => {
            let existed = kv::delete(&format!("q/{arg}"))?;
            got_through(format!("deleted q/{arg}: {existed}"))
        }
        "job-states" => {
            let ids: Vec<String> = (0..arg.parse().unwrap_or(100_000))
                .map(|i| format!("j{i}"))
                .collect();
            got_through(format!("{} states", process::job_states(&ids).len()))
        }
        // Class 5: a link out of a granted folder.
        "symlink" => {
            let (target, link) = arg.split_once('=').unwrap_or(("../..", arg));
            #[allow(deprecated)]
            std::fs::soft_link(target, link).map_err(fs_error)?;
            got_through(format!("linked {link} -> {target}"))
        }
        // Class 6: Kubernetes.
        "kube-kind" => {
            let (api, ns) = arg.split_once('@').unwrap_or((arg, "ccat"));
            let body =
                format!(r#"{{"apiVersion":"{api}","kind":"Job","metadata":{{"name":"x"}}}}"#);
            got_through(kube::create(api, "Job", ns, &body)?)
        }
        "kube-privileged" => {
            let body = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"x"},
              "spec":{"template":{"spec":{"hostPID":true,"hostNetwork":true,
              "serviceAccountName":"cluster-admin",
              "volumes":[{"name":"root","hostPath":{"path":"/"}}],
              "containers":[{"name":"c","image":"busybox",
                "securityContext":{"privileged":true}}]}}}}"#;
            got_through(kube::create("batch/v1", "Job", arg, body)?)
        }
        _ => got_through("fine".into()).map(|mut i| {
            i.native_state = Some("FINE".into());
            i
        }),
    }
}

impl hpc_plugin_sdk::Guest for Hostile {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        match spec.job_name.as_deref() {
            Some("huge-id") => Ok("1".repeat(33 << 20)),
            Some("short-batch") => Ok("short".into()),
            Some("ctl-id") => Ok("42\x1b]0;t\x07\ncompleted".into()),
            _ => Err(BackendError::InvalidRequest("hostile plugin".into())),
        }
    }

    fn submit_many(specs: Vec<JobSpec>) -> Vec<Result<String, BackendError>> {
        // A batch whose first job is named `short-batch` gets one result
        // fewer than it asked for: the host must not pair ids with the
        // wrong specs.
        let short = specs.first().and_then(|s| s.job_name.as_deref()) == Some("short-batch");
        let mut all: Vec<_> = specs.into_iter().map(Self::submit).collect();
        if short {
            all.pop();
        }
        all
    }

    fn find_job(key: String, _since: f64) -> Result<Option<String>, BackendError> {
        match key.as_str() {
            "huge-id" => Ok(Some("1".repeat(33 << 20))),
            "ctl-id" => Ok(Some("42\x1b]0;t\x07\ncompleted".into())),
            _ => Ok(None),
        }
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        let (name, arg) = job_id.split_once(':').unwrap_or((&job_id, ""));
        attack(name, arg)
    }

    fn get_logs(job_id: String) -> Result<JobLogs, BackendError> {
        let size: usize = job_id
            .strip_prefix("big:")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(JobLogs {
            stdout: format!("out\x1b]52;c;ZXZpbA==\x07\n{}", "o".repeat(size)),
            stderr: String::new(),
        })
    }

    plain_exports!(
        name: "hostile",
        description: "attacks the host on request (tests only)",
    );
}

hpc_plugin_sdk::export!(Hostile);
