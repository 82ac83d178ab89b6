// Build the component with the componentize-js API (the `jco componentize`
// CLI failed with jco 1.35.0): node build.mjs OUT.wasm [WIT_DIR]
// `http` and `fetch-event` are off: the host links no wasi:http.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile, rename } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const [out, wit = path.join(here, '..', '..', 'wit')] = process.argv.slice(2);
if (!out) throw new Error('usage: node build.mjs OUT.wasm [WIT_DIR]');
const { component } = await componentize({
  sourcePath: path.join(here, 'src', 'app.js'),
  witPath: wit,
  worldName: 'backend-process',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
