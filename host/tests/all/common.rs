//! A throw-away environment per test: its own HOME (state, plugins folder),
//! a shared compile cache, and helpers to run the binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hpc-host");
/// The test-only plugins, built by the `hpc-test-plugins` dev-dependency.
pub const TEST_PLUGINS: &str = hpc_test_plugins::DIR;

pub struct TestEnv {
    pub home: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl TestEnv {
    /// A wrapper of `/usr/bin/<program>` that counts its calls (see
    /// [`TestEnv::calls`]) and then runs it: its path, for a policy's `programs`.
    pub fn counting(&self, program: &str) -> String {
        let path = self.home.join(format!("{program}-counting"));
        let calls = self.home.join(format!("{program}.calls"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho call >> '{}'\nexec /usr/bin/{program} \"$@\"\n",
                calls.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    /// How many times the [`TestEnv::counting`] wrapper of `program` ran.
    pub fn calls(&self, program: &str) -> usize {
        std::fs::read_to_string(self.home.join(format!("{program}.calls")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    pub fn new() -> TestEnv {
        let home = std::env::temp_dir().join(format!("hpc-host-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&home).unwrap();
        // Every test shares one compile cache, as every call on a login node does.
        let cache = std::env::temp_dir().join(format!("hpc-host-test-cache-{}", unsafe {
            libc::geteuid()
        }));
        TestEnv {
            home: home.clone(),
            vars: vec![
                ("HOME".into(), home.display().to_string()),
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                (
                    "CCAT_WORKFLOW_MANAGER_HPC_CACHE_DIR".into(),
                    cache.display().to_string(),
                ),
            ],
        }
    }

    /// Set a variable for every later run (settings overrides, mostly).
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        self
    }

    /// Let at most `n` local jobs run at once (the `max_running_jobs` policy key).
    pub fn max_running_jobs(&mut self, n: usize) -> &mut Self {
        self.set(
            "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__MAX_RUNNING_JOBS",
            &n.to_string(),
        )
    }

    /// Use the Redis at `url`. The test servers have no password, which the
    /// host accepts only when told to (see `store::check_redis_url`): these
    /// run on a machine of the tests' own.
    pub fn use_redis(&mut self, url: &str) -> &mut Self {
        self.set("CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL", url);
        self.set(
            "CCAT_WORKFLOW_MANAGER_HPC_REDIS_ALLOW_UNAUTHENTICATED",
            "true",
        )
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.home.join(".local/share/hpc-host/plugins")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.join(".local/state/hpc-host")
    }

    /// Put a test plugin into the plugins folder under `name`.
    pub fn install_plugin(&self, file: &str, name: &str) {
        std::fs::create_dir_all(self.plugins_dir()).unwrap();
        std::fs::copy(
            Path::new(TEST_PLUGINS).join(format!("{file}.wasm")),
            self.plugins_dir().join(format!("{name}.wasm")),
        )
        .unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd.output().unwrap()
    }

    /// Run and require exit code `code`; returns stdout.
    pub fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "hpc-host {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run expecting failure with `code`; returns stderr.
    pub fn fail(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "hpc-host {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn submit(&self, argv: &[&str]) -> String {
        let mut args = vec!["--output", "json", "submit", "--"];
        args.extend_from_slice(argv);
        let v: Value = serde_json::from_str(&self.expect(0, &args)).unwrap();
        v["job_id"].as_str().unwrap().to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.expect(0, &["--output", "json", "status", id])).unwrap()
    }

    pub fn wait(&self, id: &str) -> Value {
        serde_json::from_str(&self.expect(0, &["--output", "json", "wait", "--timeout", "60", id]))
            .unwrap()
    }

    /// Poll until `pred` holds for the job's status.
    pub fn wait_until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(id);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The supervisor's record of a local job.
    pub fn supervisor_record(&self, id: &str) -> Value {
        let p = self
            .state_dir()
            .join("jobs/local")
            .join(id)
            .join("supervisor.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Pids of live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i64) -> Vec<i64> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        if fields[0] != "Z" && fields[2].parse::<i64>().ok() == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Pids of live processes whose command line (arguments joined by spaces)
/// contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .is_some_and(|i| stat[i + 2..].starts_with('Z'));
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !zombie && cmd.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Run the binary and return its output with its peak RSS in bytes
/// (`wait4`'s `ru_maxrss`).
// The child is reaped by `wait4` below (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured(env: &TestEnv, args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).unwrap();
        b
    });
    let mut stdout = Vec::new();
    out.read_to_end(&mut stdout).unwrap();
    let stderr = reader.join().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    (
        Output {
            status,
            stdout,
            stderr,
        },
        usage.ru_maxrss.max(0) as u64 * 1024,
    )
}
