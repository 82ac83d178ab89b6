//! The contract check at load: which `ccat:hpc` version a plugin was built
//! against, and whether its policy grants every host interface it imports.

use crate::runtime::bindings::{
    CONTRACT_PACKAGE, CONTRACT_VERSION, CONTRACT_VERSIONS_OLD, HOST_INTERFACES_VERSION,
};
use crate::runtime::capabilities;
use crate::runtime::error::HostError;
use crate::runtime::policy::Policy;

/// What a component says about itself through its imports and exports.
pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The `ccat:hpc` version of its `hpc-backend` export, if any.
    pub contract: Option<String>,
}

/// What the host speaks, for messages.
fn speaks() -> String {
    format!(
        "{CONTRACT_PACKAGE}@{CONTRACT_VERSION} (and {})",
        CONTRACT_VERSIONS_OLD.join(", ")
    )
}

/// Which contract a plugin's `hpc-backend` export speaks.
/// Ordered oldest first: `contract < Contract::V0_3` is "older than 0.3".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    /// `ccat:hpc@0.1.x`: loads, without the idempotency guarantee.
    V0_1,
    /// `ccat:hpc@0.2.x`: idempotency keys and `find-job`.
    V0_2,
    /// `ccat:hpc@0.3.x`: `submit-many`.
    V0_3,
}

impl Contract {
    /// The contract of an export version, if this host speaks it.
    pub fn of(version: &str) -> Option<Contract> {
        [Contract::V0_3, Contract::V0_2, Contract::V0_1]
            .into_iter()
            .find(|c| same_series(version, c.version()))
    }

    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_3 => CONTRACT_VERSION,
            Contract::V0_2 => CONTRACT_VERSIONS_OLD[0],
            Contract::V0_1 => CONTRACT_VERSIONS_OLD[1],
        }
    }

    /// Whether the plugin exports `find-job` (0.2.0 and later).
    pub fn finds_jobs(self) -> bool {
        self != Contract::V0_1
    }
}

/// Whether `version` is semver-compatible with `with`: `0.1.0` and `0.1.7`
/// are; `0.1.0` and `0.2.0`, or `1.0.0` and `2.0.0`, are not.
fn same_series(version: &str, with: &str) -> bool {
    let key = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(if major == 0 {
            (0, minor)
        } else {
            (major, u64::MAX)
        })
    };
    match (key(version), key(with)) {
        (Some((a, b)), Some((c, d))) => a == c && (a != 0 || b == d),
        _ => false,
    }
}

/// Check a plugin's contract version and its imports against its policy;
/// the contract its export speaks.
pub fn check(name: &str, i: &Interfaces, policy: &Policy) -> Result<Contract, HostError> {
    let load = |message: String| HostError::PluginLoad {
        plugin: name.to_owned(),
        message,
        cause: None,
    };
    let ours = |full: &str| -> Option<(String, String)> {
        let rest = full.strip_prefix(CONTRACT_PACKAGE)?.strip_prefix('/')?;
        let (iface, version) = rest.split_once('@')?;
        Some((iface.to_owned(), version.to_owned()))
    };
    let contract = match &i.contract {
        None => {
            let other = i.exports.iter().find_map(|e| ours(e)).map(|(_, v)| v);
            return Err(load(match other {
                Some(v) => format!(
                    "it was built against {CONTRACT_PACKAGE}@{v}, but this host speaks {}: rebuild it with hpc-plugin-sdk {CONTRACT_VERSION}",
                    speaks()
                ),
                None => format!(
                    "it does not export `{CONTRACT_PACKAGE}/hpc-backend@{CONTRACT_VERSION}` (exports: {})",
                    i.exports.join(", ")
                ),
            }));
        }
        Some(v) => Contract::of(v).ok_or_else(|| {
            load(format!(
                "it was built against {CONTRACT_PACKAGE}@{v}, but this host speaks {}: rebuild it with hpc-plugin-sdk {CONTRACT_VERSION}",
                speaks()
            ))
        })?,
    };
    for import in &i.imports {
        let Some((iface, version)) = ours(import) else {
            continue;
        };
        // `types` holds data only (0.2.0's uses 0.1.0's, 0.3.0 has none of
        // its own); the host interfaces kept their 0.1.0 names since.
        if iface == "types" {
            if Contract::of(&version).is_none() {
                return Err(load(format!(
                    "it imports `{import}`, but this host speaks {}",
                    speaks()
                )));
            }
            continue;
        }
        if !same_series(&version, HOST_INTERFACES_VERSION) {
            return Err(load(format!(
                "it imports `{import}`, but this host's interfaces are {CONTRACT_PACKAGE}/{iface}@{HOST_INTERFACES_VERSION} (contract {})",
                speaks()
            )));
        }
        if !policy.grants(&iface) {
            return Err(HostError::PluginDenied {
                plugin: name.to_owned(),
                message: capabilities::denied(
                    name,
                    &iface,
                    import,
                    format!(
                        "it imports `{import}`, which its policy does not grant (set {})",
                        policy.grant_hint(&iface)
                    ),
                ),
            });
        }
    }
    Ok(contract)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert_eq!(Contract::of("0.3.0"), Some(Contract::V0_3));
        assert_eq!(Contract::of("0.3.1"), Some(Contract::V0_3));
        assert_eq!(Contract::of("0.2.0"), Some(Contract::V0_2));
        assert_eq!(Contract::of("0.2.3"), Some(Contract::V0_2));
        assert_eq!(Contract::of("0.1.0"), Some(Contract::V0_1));
        assert_eq!(Contract::of("0.1.9"), Some(Contract::V0_1));
        for v in ["0.4.0", "1.0.0", "x", ""] {
            assert_eq!(Contract::of(v), None, "{v}");
        }
        assert!(same_series("1.2.0", "1.0.0") && !same_series("2.0.0", "1.0.0"));
    }
}
