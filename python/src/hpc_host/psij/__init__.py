"""hpc-host as a PSI/J executor: ``JobExecutor.get_instance("hpc-host", url="hpc-host://slurm")``.

Needs the ``psij`` extra (``pip install 'hpc-host[psij]'``). PSI/J finds the
executor through the ``psij-descriptors`` namespace module installed with this
package; importing this module is only needed to use the classes directly.
"""

# PSI/J first: importing it loads the descriptors, which import `._executor`
# through `executor.py`; importing `._executor` first would make that a
# circular import of a half-made module.
import psij  # noqa: F401

from ._executor import HpcHostExecutor, HpcHostExecutorConfig, psij_status
from ._spec import LAUNCHER, to_hpc_spec

__all__ = ["HpcHostExecutor", "HpcHostExecutorConfig", "LAUNCHER", "psij_status", "to_hpc_spec"]
