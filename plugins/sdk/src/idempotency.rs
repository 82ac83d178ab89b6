//! Idempotency keys: what a backend attaches to a job so that the host can
//! find it again after a crash (`find-job`).
//!
//! The host checks a key before a plugin sees it: 1 to 200 characters of
//! `A-Z a-z 0-9 . _ : @ / + = -` (no spaces, quotes or shell syntax). Where a
//! scheduler takes fewer characters or fewer kinds (a Kubernetes label value
//! or object name), use [`digest`]: a fixed-length, lower-case hex name of the
//! key.

use sha2::{Digest, Sha256};

/// The key's SHA-256, as 64 lower-case hex digits.
pub fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key's SHA-256 as 16 bytes, for an id derived from the key (e.g. a UUID).
pub fn digest_bytes(key: &str) -> [u8; 16] {
    let d = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(&digest_bytes("abc")[..2], &[0xba, 0x78]);
    }
}
