//! `cargo xtask completions <shell>`: prints a shell completion script for
//! `cargo xtask ...` (every task, flag and value clap knows) on stdout.
//!
//! Users type two words, `cargo xtask`, but completion belongs to one command,
//! `cargo`, whose own completion users usually have already. clap_complete
//! cannot generate for a name with a space (its bash generator panics; its
//! zsh and fish scripts define functions whose names contain the space, which
//! those shells read as two words), so each shell gets what integrates with
//! cargo there:
//!
//! - zsh: a `_cargo-xtask` function. cargo's zsh completion calls
//!   `_cargo-<subcommand>` for subcommands it does not know; without it, the
//!   script registers a small completion for `cargo` that does the same.
//! - bash: a `_cargo_xtask` function (generated for `cargo_xtask`), and a
//!   completion for `cargo` that hands `cargo xtask ...` to it and every
//!   other `cargo ...` to the completion registered before (bash keeps one
//!   completion per command).
//! - fish: completions for `cargo-xtask`, and completions for `cargo` that
//!   complete what follows `xtask` as a `cargo-xtask` command line; fish adds
//!   them to cargo's own.
//!
//! Install: `source <(cargo xtask completions bash)` in ~/.bashrc, after
//! cargo's own completion; the same for zsh, after `compinit`; for fish,
//! `cargo xtask completions fish > ~/.config/fish/conf.d/cargo-xtask.fish`.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, ValueEnum};

use crate::{flags::Cli, support::ctx::Ctx};

/// Print a completion script for `cargo xtask` (bash, zsh or fish) on stdout
#[derive(Debug, Args)]
pub struct Completions {
    /// The shell to complete in
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl Completions {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        use std::io::Write;
        let script = script(self.shell);
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(script.as_bytes()).context("writing the completion script to stdout")?;
        stdout.flush().context("writing the completion script to stdout")
    }
}

/// The whole script for one shell.
pub fn script(shell: CompletionShell) -> String {
    let mut buffer = Vec::new();
    match shell {
        CompletionShell::Bash => {
            // Not "cargo-xtask": clap_complete's bash script then names the
            // subcommands' cases differently from its dispatch (clap#5255).
            let mut cargo_xtask = Cli::command().name("cargo_xtask").bin_name("cargo_xtask");
            clap_complete::generate(clap_complete::Shell::Bash, &mut cargo_xtask, "cargo_xtask", &mut buffer);
            buffer.extend_from_slice(BASH_CARGO_HOOK.as_bytes());
        }
        CompletionShell::Zsh => {
            let mut cargo_xtask = Cli::command().name("cargo-xtask").bin_name("cargo-xtask");
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cargo_xtask, "cargo-xtask", &mut buffer);
            buffer.extend_from_slice(ZSH_CARGO_HOOK.as_bytes());
        }
        CompletionShell::Fish => {
            let mut cargo_xtask = Cli::command().name("cargo-xtask").bin_name("cargo-xtask");
            clap_complete::generate(clap_complete::Shell::Fish, &mut cargo_xtask, "cargo-xtask", &mut buffer);
            buffer.extend_from_slice(FISH_CARGO_HOOK.as_bytes());
        }
    }
    String::from_utf8(buffer).expect("clap_complete writes UTF-8")
}

/// Appended to the bash script generated for `cargo_xtask` (function
/// `_cargo_xtask`, which reads the task from word 1).
const BASH_CARGO_HOOK: &str = r#"
# `cargo xtask ...`: bash completes `cargo`, so this hands `xtask` and what
# follows to _cargo_xtask as if `cargo_xtask` had been typed, and any other
# `cargo ...` to the completion cargo had before this script (bash-completion
# loads it on demand, so it is asked to load it first).
if ! complete -p cargo >/dev/null 2>&1 && declare -F _completion_loader >/dev/null; then
    _completion_loader cargo >/dev/null 2>&1
fi
_cargo_xtask_fallback=
if [[ $(complete -p cargo 2>/dev/null) =~ -F\ ([^ ]+) && ${BASH_REMATCH[1]} != _cargo_with_xtask ]]; then
    _cargo_xtask_fallback=${BASH_REMATCH[1]}
fi
_cargo_with_xtask() {
    if [[ ${COMP_WORDS[1]-} == xtask && ${COMP_CWORD} -ge 2 ]]; then
        local COMP_WORDS=(cargo_xtask "${COMP_WORDS[@]:2}")
        local COMP_CWORD=$((COMP_CWORD - 1))
        _cargo_xtask cargo_xtask "$2" "$3"
    elif [[ -n $_cargo_xtask_fallback ]]; then
        "$_cargo_xtask_fallback" "$@"
    elif [[ ${COMP_CWORD} -eq 1 ]]; then
        COMPREPLY=($(compgen -W xtask -- "$2"))
    fi
}
complete -F _cargo_with_xtask -o bashdefault -o default cargo
"#;

/// Appended to the zsh script generated for `cargo-xtask`.
const ZSH_CARGO_HOOK: &str = r#"
# `cargo xtask ...`: cargo's zsh completion calls _cargo-xtask for its
# `xtask` subcommand. Without cargo's completion, complete `cargo xtask` here.
if (( $+functions[compdef] )) && (( ! $+_comps[cargo] )); then
    _cargo_xtask_only() {
        if (( CURRENT == 2 )); then
            compadd xtask
        elif [[ $words[2] == xtask ]]; then
            shift words
            (( CURRENT-- ))
            _cargo-xtask
        fi
    }
    compdef _cargo_xtask_only cargo
fi
"#;

/// Appended to the fish script generated for `cargo-xtask`. It is for
/// `cargo-xtask` rather than for `cargo` with an `xtask` subcommand because
/// clap_complete's fish scripts go two levels deep only (no `infra plan`
/// flags, no values for `completions`).
const FISH_CARGO_HOOK: &str = r#"
# `cargo xtask ...`: complete what follows `xtask` as a `cargo-xtask` command
# line. fish adds these to cargo's own completions.
function __fish_cargo_xtask_delegate
    set -l tokens (commandline -opc)
    set -l xtask_index (contains -i -- xtask $tokens)
    or return
    set -l current (commandline -ct)
    complete -C (string join ' ' -- cargo-xtask (string escape -- $tokens[(math $xtask_index + 1)..-1]) "$current")
end
complete -c cargo -n __fish_use_subcommand -f -a xtask -d 'Run a task of this project (cargo xtask)'
complete -c cargo -n '__fish_seen_subcommand_from xtask' -f -a '(__fish_cargo_xtask_delegate)'
"#;
