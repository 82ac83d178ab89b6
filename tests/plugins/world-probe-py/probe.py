"""A componentize-py plugin that calls no host interface: built once per
world of wit/world.wit by scripts/test-plugin-templates.sh, to check that
the host judges what each world makes it import (see ARCHITECTURE.md,
"Worlds and the load check"). Every id is unknown."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.ccat_hpc_types_0_1_0 import BackendError_NotFound, PluginInfo


class HpcBackend(exports.HpcBackend):
    def submit(self, spec):
        raise Err(BackendError_NotFound("the world probe runs no jobs"))

    def submit_many(self, specs):
        return [Err(BackendError_NotFound("the world probe runs no jobs")) for _ in specs]

    def find_job(self, idempotency_key, since):
        return None

    def get_status(self, job_id):
        raise Err(BackendError_NotFound(f"no job `{job_id}`"))

    def get_statuses(self, job_ids):
        return [Err(BackendError_NotFound(f"no job `{j}`")) for j in job_ids]

    def cancel(self, job_id):
        raise Err(BackendError_NotFound(f"no job `{job_id}`"))

    def get_logs(self, job_id):
        raise Err(BackendError_NotFound(f"no job `{job_id}`"))

    def describe(self):
        return PluginInfo(name="world-probe", version="0.1.0", description="imports its world, calls nothing", settings=[])
