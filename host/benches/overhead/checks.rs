//! The cost of the least-privilege checks (issue 11), each next to the plugin
//! call it guards: timed natively, many times, on inputs like the real ones.

use hpc_host::runtime::bindings::{HpcJobInfo, JobStatus};
use hpc_host::runtime::capabilities::{confine, kube_security};
use hpc_host::runtime::policy::Policy;
use hpc_host::runtime::request::{Placeholders, Request};
use hpc_host::runtime::sanitize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Rounds of each check's timing.
const ROUNDS: usize = 200;

/// Each check's row, timed next to the plugin call it guards.
struct Rows<'a> {
    row: &'a dyn Fn(&str, String, String),
    /// The in-process `get-status` median.
    call: Duration,
}

impl Rows<'_> {
    /// Time one `f()` (the median of [`ROUNDS`] rounds of `inner` calls
    /// each) and add its row: the time, and its share of a plugin call.
    fn time(&self, what: &str, inner: u32, mut f: impl FnMut()) {
        let d = super::median(
            (0..ROUNDS)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..inner {
                        f();
                    }
                    t.elapsed() / inner
                })
                .collect(),
        );
        (self.row)(
            what,
            format!("{:.2} µs", d.as_secs_f64() * 1e6),
            format!(
                "median of {ROUNDS}×{inner}; {:.2}% of an in-process call ({})",
                100.0 * d.as_secs_f64() / self.call.as_secs_f64(),
                super::ms(self.call)
            ),
        );
    }
}

/// Rows for each check; `call` is the in-process `get-status` median.
pub fn run(call: Duration, row: &dyn Fn(&str, String, String)) {
    let ph = Placeholders::new(Path::new("/tmp/state"), Some("ccat"), None);
    let builtin = |name: &str| {
        let request = hpc_host::runtime::builtin::find(name).unwrap().policy;
        let r = Request::parse(request, "built-in", true, &ph).unwrap();
        Policy::resolve(name, Some(&r), None).unwrap()
    };
    let k8s = builtin("kubernetes");
    let slurm = builtin("slurm");
    let rows = Rows { row, call };
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
    rows.time(
        "check: bound + escape one status answer (clone included)",
        1000,
        || {
            let i = sanitize::job_info(std::hint::black_box(info.clone()));
            std::hint::black_box(sanitize::escape(&i.job_id).len());
            std::hint::black_box(sanitize::escape(i.reason.as_deref().unwrap_or("")).len());
        },
    );

    let env = vec![("OMP_NUM_THREADS".to_owned(), "4".to_owned())];
    let mut allowed = slurm.clone();
    allowed.grants.process.program_env = vec!["OMP_NUM_THREADS".into()];
    rows.time("check: program env allow-list, one variable", 1000, || {
        std::hint::black_box(
            confine::check_program_env(&allowed, std::hint::black_box(&env)).is_ok(),
        );
    });

    let job = br#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"hpc-1","labels":{"hpc-host/id":"hpc-1"}},"spec":{"backoffLimit":0,"template":{"metadata":{"labels":{"hpc-host/id":"hpc-1"}},"spec":{"restartPolicy":"Never","containers":[{"name":"job","image":"busybox","command":["sh","-c","echo hi"],"resources":{"limits":{"cpu":"1","memory":"1024Mi"}}}]}}}}"#;
    rows.time(
        "check: pod security review of the kubernetes plugin's Job (parse + walk + serialise)",
        1000,
        || {
            std::hint::black_box(kube_security::admit(&k8s, job.to_vec()).is_ok());
        },
    );
    rows.time("check: kind grant with API group", 1000, || {
        std::hint::black_box(kube_security::kind_granted(
            &k8s.grants.kube.kinds,
            "batch/v1",
            "Job",
        ));
    });
    trust(&rows);
}

/// The trust checks of issue 22 (Trust in docs/configuration.md): what a client pays
/// per connection to the daemon and per settings or policy file it reads.
fn trust(rows: &Rows) {
    use hpc_host::sys::fsperm;
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join(format!("hpc-host-bench-trust-{}", std::process::id()));
    fsperm::make_private_dir(&dir).unwrap();
    let sock = dir.join("s.sock");
    let _ = std::fs::remove_file(&sock);
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let what = "trust: the client's socket checks per connection (lstat + SO_PEERCRED)";
    rows.time(what, 1000, || {
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
    let file = dir.join("settings.toml");
    std::fs::write(&file, "[default]\n").unwrap();
    let what = "trust: owner/mode check of a settings file or policy request";
    rows.time(what, 1000, || {
        std::hint::black_box(fsperm::check_trusted_file(&file).is_ok());
    });
    let what = "trust: socket folder and its parents (once, at `serve` start)";
    rows.time(what, 100, || {
        std::hint::black_box(fsperm::check_private_dir(&dir).is_ok());
    });
    let _ = std::fs::remove_dir_all(&dir);
}
