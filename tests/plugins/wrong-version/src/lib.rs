//! A plugin built against `ccat:hpc@9.0.0`, which this host does not speak.

wit_bindgen::generate!({ path: "wit", world: "hpc-plugin" });

struct WrongVersion;

impl exports::ccat::hpc::hpc_backend::Guest for WrongVersion {
    fn describe() -> String {
        "built against ccat:hpc@9.0.0".into()
    }
}

export!(WrongVersion);
