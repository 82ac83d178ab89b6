#!/usr/bin/env python3
"""CLI timings and peak RSS of the Python and JavaScript template plugins
next to the built-in `local`, in process and through the daemon.

    scripts/bench-plugin-templates.py HPC_HOST_BIN PLUGINS_DIR [RUNS]

PLUGINS_DIR holds template-py.wasm and template-js.wasm (with their
.policy.toml), e.g. from `scripts/test-plugin-templates.sh BIN WORK` (its
WORK/plugins). Each figure: the median of RUNS (default 20; 10 for
submit) CLI runs; peak RSS is each run's own ru_maxrss (os.wait4), median.
Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

bin_, plugins = os.path.realpath(sys.argv[1]), os.path.realpath(sys.argv[2])
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
work = tempfile.mkdtemp(prefix="hpc-host-bench-")
os.chmod(work, 0o700)
settings = os.path.join(work, "settings.toml")
sock = os.path.join(work, "hpc-host.sock")


def write_settings(daemon: str) -> None:
    with open(settings, "w") as f:
        f.write(f"""[default]
HPC_BACKEND = "local"
HPC_PLUGINS_DIR = "{plugins}"
HPC_STATE_DIR = "{work}/state"
HPC_CACHE_DIR = "{work}/cache"
HPC_SOCKET = "{sock}"
HPC_DAEMON = "{daemon}"

[default.plugins.template-py]
supervise = true

[default.plugins.template-js]
supervise = true
""")


env = dict(os.environ, HPC_HOST_CONFIG=settings)
for k in ("HPC_BACKEND", "HPC_REDIS_URL", "CCAT_WORKFLOW_MANAGER_HPC_BACKEND"):
    env.pop(k, None)


def once(args: list[str]) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS (KiB) and stdout of one run."""
    r, w = os.pipe()
    start = time.perf_counter()
    pid = os.posix_spawn(bin_, [bin_, *args], env, file_actions=[
        (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"hpc-host {' '.join(args)} failed: {out.decode()}")
    return elapsed, usage.ru_maxrss, out


def median(args: list[str], n: int) -> tuple[float, float]:
    samples = [once(args) for _ in range(n)]
    return (statistics.median(s[0] for s in samples) * 1000,
            statistics.median(s[1] for s in samples) / 1024)


def measure(backend: str) -> dict[str, object]:
    b = ["--backend", backend, "--output", "json"]
    row: dict[str, object] = {}
    if backend != "local":
        path = os.path.join(plugins, f"{backend}.wasm")
        row["size"] = os.path.getsize(path) / 1e6
        t, rss, _ = once(["--backend", backend, "plugins", "compile", backend])
        row["compile"] = (t * 1000, rss / 1024)
    else:
        t, rss, _ = once(["--backend", backend, "plugins", "compile", backend])
        row["compile"] = (t * 1000, rss / 1024)
    job = json.loads(once([*b, "submit", "--", "/bin/echo", "x"])[2])["job_id"]
    once([*b, "wait", job, "--timeout", "60"])
    row["status"] = median([*b, "status", job], runs)
    row["logs"] = median([*b, "logs", job], runs)
    row["submit"] = median([*b, "submit", "--", "/bin/true"], max(runs // 2, 3))
    return row


def daemon_rows(backends: list[str]) -> dict[str, dict[str, object]]:
    write_settings("require")
    d = subprocess.Popen([bin_, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        out: dict[str, dict[str, object]] = {}
        for backend in backends:
            b = ["--backend", backend, "--output", "json"]
            job = json.loads(once([*b, "submit", "--", "/bin/echo", "x"])[2])["job_id"]
            once([*b, "wait", job, "--timeout", "60"])
            out[backend] = {
                "status": median([*b, "status", job], runs),
                "logs": median([*b, "logs", job], runs),
                "submit": median([*b, "submit", "--", "/bin/true"], max(runs // 2, 3)),
            }
        return out
    finally:
        d.terminate()
        d.wait()


backends = ["template-py", "template-js", "local"]
write_settings("never")
direct = {b: measure(b) for b in backends}
via = daemon_rows(backends)

fmt = lambda p: f"{p[0]:.1f} ms, {p[1]:.0f} MiB"  # noqa: E731
print(f"| | {' | '.join(backends)} |")
print(f"|---|{'---|' * len(backends)}")
print("| plugin size | " + " | ".join(
    f"{direct[b]['size']:.1f} MB" if "size" in direct[b] else "built in" for b in backends) + " |")
print("| first compile (`plugins compile`): time, peak RSS | " + " | ".join(fmt(direct[b]["compile"]) for b in backends) + " |")
for op in ("status", "logs", "submit"):
    print(f"| `{op}`, in process: median, peak RSS | " + " | ".join(fmt(direct[b][op]) for b in backends) + " |")
for op in ("status", "logs", "submit"):
    print(f"| `{op}`, through the daemon: median, CLI peak RSS | " + " | ".join(fmt(via[b][op]) for b in backends) + " |")
print(f"\n(medians of {runs} runs; submit {max(runs // 2, 3)})")
