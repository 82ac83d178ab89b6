"""`apptainer exec` for a spec's `sif_path`, as the Rust SDK's `apptainer`."""

from __future__ import annotations

from .errors import invalid_request
from .spec import check_no_nul

#: The program when the `HPC_APPTAINER` setting does not name one.
DEFAULT_PROGRAM = "apptainer"
#: The setting naming the apptainer program.
SETTING_PROGRAM = "HPC_APPTAINER"
#: Apptainer passes `APPTAINERENV_<NAME>` into the container as `<NAME>`.
ENV_PREFIX = "APPTAINERENV_"


def wrap(program: str, sif: str, mounts: list[tuple[str, str | None]], argv: list[str]) -> list[str]:
    """`program exec --bind DIR … sif argv…`; `mounts` are (what, dir) pairs,
    a dir bound once. Refuses what apptainer would misread."""
    check_no_nul("`sif-path`", sif)
    if not sif.startswith("/"):
        raise invalid_request(f"`sif-path` must be an absolute path, not `{sif!r}`")
    words = [program, "exec"]
    bound: list[str] = []
    for what, d in mounts:
        if d is None:
            continue
        check_no_nul(what, d)
        if not d.startswith("/") or "," in d or ":" in d:
            raise invalid_request(
                f"{what} `{d!r}` cannot be bound into the container: it must be an absolute path without `,` or `:`"
            )
        if d not in bound:
            bound.append(d)
            words += ["--bind", d]
    words.append(sif)
    words.extend(argv)
    return words


def container_env(env: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The variables, and each again as `APPTAINERENV_<NAME>`."""
    return list(env) + [(ENV_PREFIX + n, v) for n, v in env]
