//! The contract check at load: which `ccat:hpc` version a plugin was built
//! against, and whether its policy grants every host interface it imports.

use crate::bindings::{CONTRACT_PACKAGE, CONTRACT_VERSION};
use crate::capabilities;
use crate::error::HostError;
use crate::policy::Policy;

/// What a component says about itself through its imports and exports.
pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The `ccat:hpc` version of its `hpc-backend` export, if any.
    pub contract: Option<String>,
}

/// `0.1.0` and `0.1.7` are compatible; `0.2.0` and `1.0.0` are not.
fn compatible(version: &str) -> bool {
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
    match (key(version), key(CONTRACT_VERSION)) {
        (Some((a, b)), Some((c, d))) => a == c && (a != 0 || b == d),
        _ => false,
    }
}

pub fn check(name: &str, i: &Interfaces, policy: &Policy) -> Result<(), HostError> {
    let load = |message: String| HostError::PluginLoad {
        plugin: name.to_owned(),
        message,
    };
    let ours = |full: &str| -> Option<(String, String)> {
        let rest = full.strip_prefix(CONTRACT_PACKAGE)?.strip_prefix('/')?;
        let (iface, version) = rest.split_once('@')?;
        Some((iface.to_owned(), version.to_owned()))
    };
    match &i.contract {
        None => {
            let other = i.exports.iter().find_map(|e| ours(e)).map(|(_, v)| v);
            return Err(load(match other {
                Some(v) => format!(
                    "it was built against {CONTRACT_PACKAGE}@{v}, but this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}: rebuild it with hpc-plugin-sdk {CONTRACT_VERSION}"
                ),
                None => format!(
                    "it does not export `{CONTRACT_PACKAGE}/hpc-backend@{CONTRACT_VERSION}` (exports: {})",
                    i.exports.join(", ")
                ),
            }));
        }
        Some(v) if !compatible(v) => {
            return Err(load(format!(
                "it was built against {CONTRACT_PACKAGE}@{v}, but this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}: rebuild it with hpc-plugin-sdk {CONTRACT_VERSION}"
            )));
        }
        Some(_) => {}
    }
    for import in &i.imports {
        let Some((iface, version)) = ours(import) else {
            continue;
        };
        if !compatible(&version) {
            return Err(load(format!(
                "it imports `{import}`, but this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}"
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert!(compatible("0.1.0") && compatible("0.1.9"));
        assert!(!compatible("0.2.0") && !compatible("1.0.0") && !compatible("x"));
    }
}
