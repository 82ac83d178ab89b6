// What a supervised job's state (`process.job-states`) can say beyond
// `running(since)` and `ended(usage)`. Plain JavaScript: the backend and its
// tests import it without the host's bindings.

/** The start time `job-states` answers, as `running(NOT_STARTED)`, for a job
 * accepted but waiting for a free slot (the host runs at most
 * `max_running_jobs` local jobs at once): it has not started yet. */
export const NOT_STARTED = Infinity;

/** Whether a job's state says it waits for a slot to start. */
export function waitsForSlot(state) {
  return state.tag === 'running' && state.val === NOT_STARTED;
}
