//! Job records in the kv store: JSON, written and read the same way by every
//! plugin, with errors instead of panics.

use crate::BackendError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `value` as JSON bytes. Records of strings and numbers always encode; a
/// failure (a map with non-string keys) is an internal error, not a panic.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, BackendError> {
    serde_json::to_vec(value)
        .map_err(|e| BackendError::Internal(format!("cannot encode a job record: {e}")))
}

/// A record from JSON bytes; the `Err` says what is wrong with them.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a job record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Rec {
        id: String,
        at: f64,
    }

    #[test]
    fn round_trip_and_errors() {
        let r = Rec {
            id: "a".into(),
            at: 1.5,
        };
        let bytes = encode(&r).unwrap();
        assert_eq!(decode::<Rec>(&bytes).unwrap(), r);
        assert!(
            decode::<Rec>(b"{")
                .unwrap_err()
                .starts_with("not a job record: ")
        );
        let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(matches!(encode(&bad), Err(BackendError::Internal(_))));
    }
}
