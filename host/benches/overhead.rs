//! Host overhead, side by side with the raw baseline. Run:
//!
//! ```text
//! cargo bench -p hpc-host --bench overhead          # needs Redis on 127.0.0.1:6379
//! ```
//!
//! Prints a Markdown table of medians (and ratios) for BENCHMARKS.md.

mod support;

use hpc_host::Host;
use hpc_host::runtime::settings::{Overrides, Settings};
use hpc_host::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{BIN, Env, median, ms};

#[path = "overhead/checks.rs"]
mod checks;
#[path = "overhead/quota.rs"]
mod quota;

/// The CLI's environment for this bench: a fresh HOME, and with `redis` a
/// Redis store (a kv prefix of this run's own) in place of the embedded one.
fn bench_env(tag: &str, redis: bool) -> Env {
    let mut env = Env::new(tag, &[]);
    if redis {
        env.set(
            "CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL",
            "redis://127.0.0.1:6379/0",
        );
        env.set(
            "CCAT_WORKFLOW_MANAGER_HPC_REDIS_ALLOW_UNAUTHENTICATED",
            "true",
        );
        env.set(
            "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__KV_PREFIX",
            &format!("hpc-host-bench:{}:", std::process::id()),
        );
    }
    env
}

impl Env {
    /// Run `hpc-host ARGS`, which must succeed: its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn time(&self, args: &[&str]) -> Duration {
        let t = Instant::now();
        self.run(args);
        t.elapsed()
    }

    fn cache(&self) -> PathBuf {
        self.home.join(".cache/hpc-host")
    }
}

/// Peak RSS of one CLI call, from the kernel's rusage of the child.
///
/// The child's `ru_maxrss` also counts the process it was spawned from (the
/// spawn shares or copies that memory until `exec`), so the call is made from
/// a fresh, small copy of this program (`--rss-probe`) with a plain `fork`.
fn peak_rss_kib(env: &Env, args: &[&str]) -> i64 {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.arg("--rss-probe")
        .arg(BIN)
        .args(args)
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v)));
    let out = c.output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn rss_probe(argv: &[String]) -> ! {
    let cargs: Vec<std::ffi::CString> = argv
        .iter()
        .map(|a| std::ffi::CString::new(a.as_str()).unwrap())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: this process is single-threaded here; the child only execs.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            libc::dup2(null, 1);
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        println!("{}", usage.ru_maxrss);
    }
    std::process::exit(0)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--rss-probe") {
        rss_probe(&argv[2..]);
    }
    let rows = std::cell::RefCell::new(Vec::new());
    let row = |what: &str, value: String, note: String| {
        support::row(&mut rows.borrow_mut(), what, value, note);
    };

    // ---- in-process: one plugin call on a cached, loaded plugin -------------
    let env = bench_env("inproc", false);
    let id = env.run(&["submit", "--", "true"]).trim().to_owned();
    env.run(&["wait", &id]);
    let settings = Settings::resolve(&Overrides::default(), &env.vars).unwrap();
    let host = Host::new(&settings).unwrap();
    let plugin = host.backend().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 500;
    let (call, describe, native) = rt.block_on(async {
        for _ in 0..20 {
            plugin.get_status(&id).await.unwrap();
        }
        let mut call = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            plugin.get_status(&id).await.unwrap();
            call.push(t.elapsed());
        }
        let mut describe = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            plugin.describe().await.unwrap();
            describe.push(t.elapsed());
        }
        // The baseline: the one store read `get-status` makes, called natively.
        let store = Store::open(None, &settings.state_dir).unwrap();
        let key = format!("hpc-host:local:job/{id}");
        let mut native = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let v = store.get_many(vec![key.clone()]).await.unwrap();
            assert!(v[0].is_some());
            native.push(t.elapsed());
        }
        (median(call), median(describe), median(native))
    });
    row(
        "in-process `get-status` (fresh store + instantiate + call + kv read), embedded store",
        ms(call),
        format!("median of {n}"),
    );
    row(
        "in-process `describe` (fresh store + instantiate + call, no host calls)",
        ms(describe),
        format!("median of {n}"),
    );
    row(
        "native baseline: the same kv read, called directly",
        ms(native),
        format!(
            "host + wasm overhead per call: {} ({:.1}x the raw read)",
            ms(call.saturating_sub(native)),
            call.as_secs_f64() / native.as_secs_f64()
        ),
    );

    // ---- least-privilege checks (issue 11), next to the call they guard ------
    checks::run(call, &row);
    quota::run(&rt, call, &row);

    // ---- policy checks: a host call refused by policy vs one that runs ---------
    let mut hostile = bench_env("policy", false);
    let plugins = hostile.home.join(".local/share/hpc-host/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        Path::new(hpc_test_plugins::DIR).join("hostile.wasm"),
        plugins.join("hostile.wasm"),
    )
    .unwrap();
    hostile
        .set(
            "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__PROGRAMS",
            "{ ok = \"/bin/true\" }",
        )
        .set(
            "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__K8S_NAMESPACES",
            "[\"ccat\"]",
        );
    let o = Overrides {
        backend: Some("hostile".into()),
        ..Default::default()
    };
    let hs = Settings::resolve(&o, &hostile.vars).unwrap();
    let hhost = Host::new(&hs).unwrap();
    let hp = hhost.backend().unwrap();
    let (plain, denied, allowed) = rt.block_on(async {
        let time = async |id: &str, n: usize| {
            let mut v = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let _ = hp.get_status(id).await;
                v.push(t.elapsed());
            }
            median(v)
        };
        (
            time("fine", n).await,
            time("run:bash", n).await,
            time("run:ok", 100).await,
        )
    });
    row(
        "policy: plugin call with no host call",
        ms(plain),
        format!("median of {n}"),
    );
    row(
        "policy: plugin call whose `process.run` is refused by policy",
        ms(denied),
        format!(
            "check + refusal: {} per call",
            ms(denied.saturating_sub(plain))
        ),
    );
    row(
        "policy: plugin call whose `process.run` passes the check and runs `/bin/true`",
        ms(allowed),
        format!(
            "median of 100; the check is {:.1}% of it",
            100.0 * denied.saturating_sub(plain).as_secs_f64() / allowed.as_secs_f64()
        ),
    );
    cleanup(&hostile.home);

    // ---- CLI wall time -------------------------------------------------------
    let k = 30;
    let version = median((0..k).map(|_| env.time(&["--version"])).collect());
    let warm = median((0..k).map(|_| env.time(&["status", &id])).collect());
    let first: Vec<Duration> = (0..5)
        .map(|_| {
            let _ = std::fs::remove_dir_all(env.cache());
            env.time(&["status", &id])
        })
        .collect();
    let first = median(first);
    env.run(&["status", &id]);
    row(
        "CLI `hpc-host --version`",
        ms(version),
        format!("median of {k}"),
    );
    row(
        "CLI `hpc-host status ID`, warm compile cache",
        ms(warm),
        format!(
            "median of {k}; {:.1}x `--version`",
            warm.as_secs_f64() / version.as_secs_f64()
        ),
    );
    row(
        "CLI `hpc-host status ID`, first use (empty cache: compiles the plugin)",
        ms(first),
        format!(
            "median of 5; {:.1}x warm",
            first.as_secs_f64() / warm.as_secs_f64()
        ),
    );
    row(
        "peak RSS of one `hpc-host status ID` (warm)",
        format!(
            "{:.1} MiB",
            peak_rss_kib(&env, &["status", &id]) as f64 / 1024.0
        ),
        "ru_maxrss".into(),
    );
    row(
        "peak RSS of `hpc-host --version`",
        format!(
            "{:.1} MiB",
            peak_rss_kib(&env, &["--version"]) as f64 / 1024.0
        ),
        "ru_maxrss".into(),
    );

    // ---- 200 submits and one batched status: embedded vs Redis ---------------
    for (tag, redis) in [("embedded", false), ("redis", true)] {
        let env = bench_env(tag, redis);
        env.run(&["plugins", "compile", "local"]);
        let mut ids = Vec::new();
        let mut each = Vec::new();
        let t0 = Instant::now();
        for _ in 0..200 {
            let t = Instant::now();
            ids.push(env.run(&["submit", "--", "true"]).trim().to_owned());
            each.push(t.elapsed());
        }
        let total = t0.elapsed();
        let mut args = vec!["wait"];
        args.extend(ids.iter().map(String::as_str));
        env.run(&args);
        let mut args = vec!["--output", "json", "status"];
        args.extend(ids.iter().map(String::as_str));
        let status = median((0..5).map(|_| env.time(&args)).collect());
        row(
            &format!("200 CLI submits, {tag} store"),
            format!("{:.2} s total", total.as_secs_f64()),
            format!("median {} per submit", ms(median(each))),
        );
        row(
            &format!("one `status` of 200 ids, {tag} store"),
            ms(status),
            "median of 5 (jobs finished)".into(),
        );
        cleanup(&env.home);
    }
    cleanup(&env.home);

    support::print_table(rows.into_inner());
}

fn cleanup(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}
