// `apptainer exec` for a spec's `sifPath`, as the Rust SDK's `apptainer`.
import { invalidRequest } from './errors.js';
import { checkNoNul } from './spec.js';

export const DEFAULT_PROGRAM = 'apptainer';
export const SETTING_PROGRAM = 'HPC_APPTAINER';
export const ENV_PREFIX = 'APPTAINERENV_';

/** `program exec --bind DIR … sif argv…`; `mounts` are [what, dir] pairs. */
export function wrap(program, sif, mounts, argv) {
  checkNoNul('`sif-path`', sif);
  if (!sif.startsWith('/')) throw invalidRequest(`\`sif-path\` must be an absolute path, not \`${sif}\``);
  const words = [program, 'exec'];
  const bound = [];
  for (const [what, dir] of mounts) {
    if (dir === undefined || dir === null) continue;
    checkNoNul(what, dir);
    if (!dir.startsWith('/') || dir.includes(',') || dir.includes(':')) {
      throw invalidRequest(`${what} \`${dir}\` cannot be bound into the container: it must be an absolute path without \`,\` or \`:\``);
    }
    if (!bound.includes(dir)) {
      bound.push(dir);
      words.push('--bind', dir);
    }
  }
  return [...words, sif, ...argv];
}

/** The variables, and each again as `APPTAINERENV_<NAME>`. */
export function containerEnv(env) {
  return [...env, ...env.map(([n, v]) => [ENV_PREFIX + n, v])];
}
