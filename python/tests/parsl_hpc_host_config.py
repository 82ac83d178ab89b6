"""A Parsl config for Parsl's own test suite (``pytest --pyargs parsl.tests ... --config THIS``):
HTEX on 127.0.0.1 whose blocks are hpc-host jobs.

The test sets the site through the environment: ``HPC_HOST_PARSL_BACKEND``,
``HPC_HOST_PARSL_SOCKET``, ``HPC_HOST_PARSL_ENVIRON`` (JSON) and
``HPC_HOST_PARSL_TRANSPORT``.
"""

import json
import os

from parsl.config import Config
from parsl.executors import HighThroughputExecutor

from hpc_host.parsl import HpcHostProvider


def fresh_config() -> Config:
    environ = json.loads(os.environ.get("HPC_HOST_PARSL_ENVIRON", "{}"))
    return Config(
        executors=[
            HighThroughputExecutor(
                label="hpc_host_htex",
                address="127.0.0.1",
                max_workers_per_node=4,
                provider=HpcHostProvider(
                    os.environ.get("HPC_HOST_PARSL_BACKEND", "local"),
                    socket=os.environ.get("HPC_HOST_PARSL_SOCKET"),
                    environ=environ,
                    transport=os.environ.get("HPC_HOST_PARSL_TRANSPORT", "daemon"),  # type: ignore[arg-type]
                    init_blocks=1,
                    min_blocks=0,
                    max_blocks=1,
                    walltime="00:20:00",
                    status_polling_interval=1,
                ),
            )
        ],
        strategy="none",
    )
