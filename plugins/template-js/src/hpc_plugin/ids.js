// Job ids: random UUIDs, or for a keyed submit the UUID made from the key's
// sha256, so every submit with a key names the same job (the Rust `local`
// backend derives the same id from the same key).

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** sha256 of the key, hex (WebCrypto: in Node and in the component). */
export async function digest(key) {
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key))));
}

function uuidOf(bytes) {
  const b = Uint8Array.from(bytes.slice(0, 16));
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const h = hex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The job id a keyed submit makes. */
export async function keyedId(key) {
  return uuidOf(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key))));
}

export function newId() {
  return uuidOf(crypto.getRandomValues(new Uint8Array(16)));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The canonical form of a job id, or undefined when it cannot be one of ours. */
export function parseId(id) {
  if (typeof id !== 'string') return undefined;
  const lower = id.toLowerCase();
  return UUID.test(lower) ? lower : undefined;
}
