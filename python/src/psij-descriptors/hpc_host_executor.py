"""Registers hpc-host's PSI/J executor under the name ``hpc-host``.

PSI/J imports every module of the ``psij-descriptors`` namespace package it
finds on ``sys.path`` (this folder has no ``__init__.py`` on purpose) and
registers the descriptors in ``__PSI_J_EXECUTORS__``.
"""

from packaging.version import Version
from psij.descriptor import Descriptor

__PSI_J_EXECUTORS__ = [
    Descriptor(
        name="hpc-host",
        nice_name="hpc-host",
        version=Version("0.1.0"),
        cls="hpc_host.psij.executor.HpcHostExecutor",
    )
]
