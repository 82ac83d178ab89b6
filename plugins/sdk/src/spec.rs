//! Checks of a [`JobSpec`](crate::JobSpec) every backend makes the same way. An `Err` is an
//! invalid-request message; `field` is the name as the backend spells it in
//! its messages (`execution-command` or `execution_command`).

/// The command must have a program: not empty, no empty program name, and
/// no NUL anywhere (no argv element can carry one).
pub fn check_command(argv: &[String], field: &str) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err(format!("`{field}` is empty"));
    };
    if program.is_empty() {
        return Err(format!("`{field}` starts with an empty program name"));
    }
    for (i, word) in argv.iter().enumerate() {
        check_no_nul(&format!("`{field}` element {i}"), word)?;
    }
    Ok(())
}

/// `what` (already quoted for the message) must not contain a NUL.
pub fn check_no_nul(what: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        Err(format!(
            "{what} contains a NUL character, which no program argument or environment value can carry"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn commands() {
        assert!(check_command(&argv(&["echo", "hi"]), "c").is_ok());
        assert_eq!(
            check_command(&[], "execution_command").unwrap_err(),
            "`execution_command` is empty"
        );
        assert!(
            check_command(&argv(&[""]), "c")
                .unwrap_err()
                .contains("empty program name")
        );
        assert!(
            check_command(&argv(&["a", "b\0"]), "c")
                .unwrap_err()
                .contains("`c` element 1 contains a NUL")
        );
    }
}
