//! The cost of the least-privilege checks (issue 11), each next to the plugin
//! call it guards: timed natively, many times, on inputs like the real ones.

use hpc_host::bindings::{HpcJobInfo, JobStatus};
use hpc_host::capabilities::{confine, kube_security};
use hpc_host::policy::Policy;
use hpc_host::request::{Placeholders, Request};
use hpc_host::sanitize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Median time of one `f()` over `n` rounds of `inner` calls each.
fn per_call(n: usize, inner: u32, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed() / inner
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

/// Rows for each check; `call` is the in-process `get-status` median.
pub fn run(call: Duration, row: &dyn Fn(&str, String, String)) {
    let ph = Placeholders::new(Path::new("/tmp/state"), Some("ccat"), None);
    let builtin = |name: &str| {
        let request = hpc_host::builtin::find(name).unwrap().policy;
        let r = Request::parse(request, "built-in", true, &ph).unwrap();
        Policy::resolve(name, Some(&r), None).unwrap()
    };
    let k8s = builtin("kubernetes");
    let slurm = builtin("slurm");
    let note = |d: Duration| {
        format!(
            "median of 200×1000; {:.2}% of an in-process call ({})",
            100.0 * d.as_secs_f64() / call.as_secs_f64(),
            super::ms(call)
        )
    };
    let info = HpcJobInfo {
        job_id: "4711".into(),
        status: JobStatus::Running,
        exit_code: None,
        wall_time_seconds: Some(12.0),
        cpu_hours: None,
        peak_memory_gb: None,
        native_state: Some("RUNNING".into()),
        reason: Some("None".into()),
    };
    let d = per_call(200, 1000, || {
        let i = sanitize::job_info(std::hint::black_box(info.clone()));
        std::hint::black_box(sanitize::escape(&i.job_id).len());
        std::hint::black_box(sanitize::escape(i.reason.as_deref().unwrap_or("")).len());
    });
    row(
        "check: bound + escape one status answer (clone included)",
        us(d),
        note(d),
    );

    let env = vec![("OMP_NUM_THREADS".to_owned(), "4".to_owned())];
    let mut allowed = slurm.clone();
    allowed.grants.process.program_env = vec!["OMP_NUM_THREADS".into()];
    let d = per_call(200, 1000, || {
        std::hint::black_box(
            confine::check_program_env(&allowed, std::hint::black_box(&env)).is_ok(),
        );
    });
    row(
        "check: program env allow-list, one variable",
        us(d),
        note(d),
    );

    let job = br#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"hpc-1","labels":{"hpc-host/id":"hpc-1"}},"spec":{"backoffLimit":0,"template":{"metadata":{"labels":{"hpc-host/id":"hpc-1"}},"spec":{"restartPolicy":"Never","containers":[{"name":"job","image":"busybox","command":["sh","-c","echo hi"],"resources":{"limits":{"cpu":"1","memory":"1024Mi"}}}]}}}}"#;
    let d = per_call(200, 1000, || {
        std::hint::black_box(kube_security::admit(&k8s, job.to_vec()).is_ok());
    });
    row(
        "check: pod security review of the kubernetes plugin's Job (parse + walk + serialise)",
        us(d),
        note(d),
    );
    let d = per_call(200, 1000, || {
        std::hint::black_box(kube_security::kind_granted(
            &k8s.grants.kube.kinds,
            "batch/v1",
            "Job",
        ));
    });
    row("check: kind grant with API group", us(d), note(d));
    trust(&row, &note);
}

/// The trust checks of issue 22 (Trust in docs/configuration.md): what a client pays
/// per connection to the daemon and per settings or policy file it reads.
fn trust(row: &dyn Fn(&str, String, String), note: &dyn Fn(Duration) -> String) {
    use hpc_host::fsperm;
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join(format!("hpc-host-bench-trust-{}", std::process::id()));
    fsperm::make_private_dir(&dir).unwrap();
    let sock = dir.join("s.sock");
    let _ = std::fs::remove_file(&sock);
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let d = per_call(200, 1000, || {
        std::hint::black_box(fsperm::check_own_socket(&sock).is_ok());
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt fills a ucred of the size given.
        unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast(),
                &mut len,
            )
        };
        std::hint::black_box(cred.uid);
    });
    row(
        "trust: the client's socket checks per connection (lstat + SO_PEERCRED)",
        us(d),
        note(d),
    );
    let file = dir.join("settings.toml");
    std::fs::write(&file, "[default]\n").unwrap();
    let d = per_call(200, 1000, || {
        std::hint::black_box(fsperm::check_trusted_file(&file).is_ok());
    });
    row(
        "trust: owner/mode check of a settings file or policy request",
        us(d),
        note(d),
    );
    let d = per_call(200, 100, || {
        std::hint::black_box(fsperm::check_private_dir(&dir).is_ok());
    });
    row(
        "trust: socket folder and its parents (once, at `serve` start)",
        us(d),
        note(d),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
