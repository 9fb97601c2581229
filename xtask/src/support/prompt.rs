//! Questions on the terminal, for actions that cannot be undone.

use anyhow::{Context, Result, bail};

/// Asks a yes/no question on the terminal; `yes` (the `--yes` flag)
/// answers yes. Without a terminal and without `--yes` it refuses rather
/// than hang.
pub fn confirm(yes: bool, question: &str) -> Result<bool> {
    use std::io::IsTerminal;
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}: no terminal to ask on; pass --yes to confirm non-interactively");
    }
    crate::support::ui::ask(&format!("{question} [y/N] "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("reading the answer from the terminal")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Asks for `name` typed back on the terminal (irreversible or protected
/// actions); `nothing_done` ends the refusal, e.g. "nothing destroyed".
pub fn type_name_back(name: &str, prompt: &str, nothing_done: &str) -> Result<()> {
    crate::support::ui::ask(prompt);
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("reading the confirmation")?;
    if answer.trim() != name {
        bail!("confirmation {:?} does not match {name:?}; {nothing_done}", answer.trim());
    }
    Ok(())
}
