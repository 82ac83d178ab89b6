"""The module PSI/J's descriptor names: it only re-exports the executor.

PSI/J loads the module a descriptor names from its file, as a second copy
beside the normal import; keeping the class in ``_executor`` (imported here
the normal way) makes both names the same class, with one event stream per
process.
"""

from hpc_host.psij._executor import HpcHostExecutor, HpcHostExecutorConfig

__all__ = ["HpcHostExecutor", "HpcHostExecutorConfig"]
