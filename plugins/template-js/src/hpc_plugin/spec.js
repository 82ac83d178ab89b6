// Spec checks and resource conversions, as the Rust SDK's `spec` and `resources`.
import { invalidRequest } from './errors.js';

export const MAX_HOURS = 100 * 366 * 24;

export function checkNoNul(what, value) {
  if (value.includes('\0')) {
    throw invalidRequest(`${what} contains a NUL character, which no program argument or environment value can carry`);
  }
}

export function checkCommand(argv, field = 'execution_command') {
  if (argv.length === 0) throw invalidRequest(`\`${field}\` is empty`);
  if (argv[0] === '') throw invalidRequest(`\`${field}\` starts with an empty program name`);
  argv.forEach((w, i) => checkNoNul(`\`${field}\` element ${i}`, w));
}

/** Whole seconds, rounded up (without float noise); at least 1. */
export function hoursToSeconds(hours, field = 'resource_requirements.time_hours') {
  if (typeof hours !== 'number' || !Number.isFinite(hours) || hours <= 0) {
    throw invalidRequest(`\`${field}\` must be a positive number, not \`${hours}\``);
  }
  if (hours > MAX_HOURS) throw invalidRequest(`\`${field}\` is too large: \`${hours}\``);
  const exact = hours * 3600;
  const nearest = Math.round(exact);
  const seconds = Math.abs(exact - nearest) < 1e-6 ? nearest : Math.ceil(exact);
  return Math.max(seconds, 1);
}
