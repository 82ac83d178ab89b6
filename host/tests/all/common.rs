//! A throw-away environment per test: its own HOME (state, plugins folder),
//! a shared compile cache, and helpers to run the binary.

use hpc_host::Host;
use hpc_host::runtime::settings::{Overrides, Settings};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod wrappers;

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
        wrappers::counting(&self.home, program)
    }

    /// How many times the wrappers of `program` ran ([`TestEnv::counting`],
    /// [`TestEnv::sbatch_wrapper`]).
    pub fn calls(&self, program: &str) -> usize {
        wrappers::calls(&self.home, program)
    }

    /// A wrapper of `/usr/bin/sbatch` named `name` that counts its calls and
    /// runs `before` (shell commands) before the real sbatch and `after`
    /// after it, ending with sbatch's exit status: its path.
    pub fn sbatch_wrapper(&self, name: &str, before: &str, after: &str) -> String {
        let count = wrappers::count_call(&self.home, "sbatch");
        wrappers::script(
            &self.home.join(name),
            &format!("{count}\n{before}\n/usr/bin/sbatch \"$@\"\nrc=$?\n{after}\nexit $rc"),
        )
    }

    /// Give the SLURM plugin `sbatch` (a path) and the other commands from
    /// `/usr/bin`, those `counted` names through a [`TestEnv::counting`] wrapper.
    pub fn use_slurm_programs(&mut self, sbatch: &str, counted: &[&str]) -> &mut Self {
        let programs = wrappers::slurm_programs(&self.home, sbatch, counted);
        self.set("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", &programs)
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

    /// Write a built-in plugin's code to `path` (a plugin file under
    /// another name, or one for `plugins inspect`); its folder is made.
    pub fn write_builtin(&self, builtin: &str, path: &Path) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let wasm = hpc_host::runtime::builtin::find(builtin).unwrap().wasm;
        std::fs::write(path, wasm).unwrap();
        path.to_owned()
    }

    /// `hpc-host ARGS` with only this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Start `hpc-host ARGS`, its stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Run and require exit code `code`.
    fn exits(&self, code: i32, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "hpc-host {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run and require exit code `code`; returns stdout.
    pub fn expect(&self, code: i32, args: &[&str]) -> String {
        String::from_utf8(self.exits(code, args).stdout).unwrap()
    }

    /// Run expecting failure with `code`; returns stderr.
    pub fn fail(&self, code: i32, args: &[&str]) -> String {
        String::from_utf8(self.exits(code, args).stderr).unwrap()
    }

    /// `hpc-host --output json ARGS`, which must succeed: its answer.
    pub fn json(&self, args: &[&str]) -> Value {
        let args = [&["--output", "json"], args].concat();
        serde_json::from_str(&self.expect(0, &args)).unwrap()
    }

    /// `plugins inspect FILE`: what the host makes of a plugin file.
    pub fn inspect(&self, file: &Path) -> Value {
        self.json(&["plugins", "inspect", file.to_str().unwrap()])
    }

    /// The host in this process, as the CLI in this environment loads it
    /// with `--backend BACKEND`.
    pub fn host(&self, backend: &str) -> Host {
        let o = Overrides {
            backend: Some(backend.into()),
            ..Default::default()
        };
        Host::new(&Settings::resolve(&o, &self.vars).unwrap()).unwrap()
    }

    pub fn submit(&self, argv: &[&str]) -> String {
        let args = [&["submit", "--"], argv].concat();
        self.json(&args)["job_id"].as_str().unwrap().to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        self.json(&["status", id])
    }

    pub fn wait(&self, id: &str) -> Value {
        self.json(&["wait", "--timeout", "60", id])
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

/// Run `fut` to its end on a runtime of its own (for a [`TestEnv::host`]'s
/// plugin calls, which are async).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

/// Call `check` every 20 ms until it answers, for at most `timeout` (then
/// fail with `never`, what did not happen): its answer.
pub fn poll<T>(timeout: Duration, never: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(answer) = check() {
            return answer;
        }
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `cmd`, which must succeed: its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Each live (non-zombie) process: its pid, its `/proc` folder, and the
/// fields of its `stat` after the command name (`proc_pid_stat(5)` from
/// field 3, the state).
fn live_processes() -> impl Iterator<Item = (i64, PathBuf, Vec<String>)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i64>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name is in parentheses and may hold spaces.
            let close = stat.rfind(')')?;
            let fields: Vec<String> = stat[close + 2..].split(' ').map(str::to_owned).collect();
            (fields[0] != "Z").then(|| (pid, entry.path(), fields))
        })
}

/// Pids of live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i64) -> Vec<i64> {
    live_processes()
        .filter(|(_, _, fields)| fields[2].parse::<i64>().ok() == Some(pgid))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Pids of live processes whose command line (arguments joined by spaces)
/// contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i64> {
    live_processes()
        .filter(|(_, dir, _)| {
            let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Run the binary and return its output with its peak RSS in bytes
/// (`wait4`'s `ru_maxrss`).
// The child is reaped by `wait4` below (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured(env: &TestEnv, args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    let mut child = env.spawn(args);
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
