//! Where a password comes from: a file named by a flag, an environment
//! variable, or the terminal with echo off, in that order. Never argv: a
//! command line is visible to every user of the machine in `ps` and lands in
//! shell history.

use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    io::{IsTerminal, Read, Write},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::support::cleanup;
use crate::support::secret::SecretValue;

/// Where to look for one password.
pub struct PasswordSource<'a> {
    /// Shown in the prompt, e.g. "Password for secrets.tfvars.enc".
    pub prompt: String,
    /// `--password-file` or `--new-password-file`, when given.
    pub file: Option<&'a Path>,
    /// How to name a password file, for the error without a password:
    /// "pass --password-file PATH".
    pub file_hint: &'static str,
    pub env_var: &'static str,
    /// Ask twice when prompting (a password that is about to encrypt).
    pub confirm: bool,
}

/// Reads the password. The variable is looked up in the process
/// environment, then in the project's `.env` (`dotenv`, ignored by git).
pub fn read(source: &PasswordSource<'_>, dotenv: &[(String, String)]) -> Result<SecretValue> {
    let env = |name: &str| {
        std::env::var_os(name)
            .or_else(|| dotenv.iter().find(|(key, _)| key == name).map(|(_, value)| OsString::from(value)))
    };
    let terminal = std::io::stdin().is_terminal().then_some(prompt_hidden);
    read_with(source, env, terminal)
}

/// `read` with its environment and terminal (`None`: there is none) passed
/// in, for tests.
fn read_with(
    source: &PasswordSource<'_>,
    env: impl Fn(&str) -> Option<OsString>,
    terminal: Option<impl FnMut(&str) -> Result<SecretValue>>,
) -> Result<SecretValue> {
    if let Some(path) = source.file {
        let mut text =
            std::fs::read_to_string(path).with_context(|| format!("reading the password file {}", path.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        let password = SecretValue::new(text);
        if password.expose().is_empty() {
            bail!("the password file {} is empty: an empty password is refused", path.display());
        }
        return Ok(password);
    }
    if let Some(value) = env(source.env_var) {
        let Ok(value) = value.into_string() else {
            bail!("{} is not valid UTF-8", source.env_var);
        };
        let password = SecretValue::new(value);
        if password.expose().is_empty() {
            bail!("{} is set but empty: an empty password is refused", source.env_var);
        }
        return Ok(password);
    }
    let Some(mut ask) = terminal else {
        bail!("no password: set {}, {}, or run in a terminal to be asked", source.env_var, source.file_hint);
    };
    let password = ask(&source.prompt)?;
    if password.expose().is_empty() {
        bail!("an empty password is refused");
    }
    if source.confirm {
        let again = ask(&format!("{} (again)", source.prompt))?;
        if again.expose() != password.expose() {
            bail!("the two passwords differ");
        }
    }
    Ok(password)
}

/// Asks on /dev/tty with echo off (`stty -echo`), so the password is
/// neither shown nor read from a pipe meant for data. The terminal's
/// settings are restored afterwards, also on Ctrl-C.
fn prompt_hidden(prompt: &str) -> Result<SecretValue> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("opening /dev/tty to ask for the password")?;
    let saved_settings = stty(&tty, &["-g"])?;
    stty(&tty, &["-echo"])?;
    let _restore = cleanup::register("restore the terminal's echo", move || {
        if let Ok(tty) = File::open("/dev/tty") {
            let _ = stty(&tty, &[saved_settings.trim()]);
        }
    });
    write!(tty, "{prompt}: ").context("writing to the terminal")?;
    tty.flush().context("writing to the terminal")?;
    let read = read_line(&tty);
    // Echo is off, so the Enter key left the cursor on the prompt line.
    let _ = writeln!(tty);
    let mut line = read.context("reading the password from the terminal")?;
    if line.ends_with(b"\r") {
        line.pop();
    }
    // `from_utf8` takes the buffer over without copying it.
    match String::from_utf8(std::mem::take(&mut *line)) {
        Ok(line) => Ok(SecretValue::new(line)),
        Err(err) => {
            drop(Zeroizing::new(err.into_bytes()));
            bail!("the password read from the terminal is not valid UTF-8")
        }
    }
}

/// One line from the terminal, without its newline, a byte at a time into a
/// buffer wiped when dropped: a `BufReader` would keep a copy of the
/// password in a buffer of its own, and a growing `Vec` would leave one
/// behind in every allocation it outgrew. (A terminal hands over a line at a
/// time, so reading it byte by byte costs nothing noticeable.)
fn read_line(mut tty: &File) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if line.len() == line.capacity() {
                    let mut larger = Zeroizing::new(Vec::with_capacity(line.capacity() * 2));
                    larger.extend_from_slice(&line);
                    line = larger;
                }
                line.push(byte[0]);
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(line)
}

fn stty(tty: &File, args: &[&str]) -> Result<String> {
    let output = Command::new("stty")
        .args(args)
        .stdin(tty.try_clone().context("duplicating the terminal handle")?)
        .stderr(Stdio::inherit())
        .output()
        .context("running stty")?;
    if !output.status.success() {
        bail!("stty {} failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, path::PathBuf};

    use super::*;

    fn source(file: Option<&Path>, confirm: bool) -> PasswordSource<'_> {
        PasswordSource {
            prompt: "Password for test.enc".to_owned(),
            file,
            file_hint: "pass --password-file PATH",
            env_var: "TEST_PASSWORD",
            confirm,
        }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn env_with(value: &'static str) -> impl Fn(&str) -> Option<OsString> {
        move |name| (name == "TEST_PASSWORD").then(|| OsString::from(value))
    }

    fn never_asked(_: &str) -> Result<SecretValue> {
        panic!("the terminal must not be asked")
    }

    fn answers(list: &[&str]) -> Option<impl FnMut(&str) -> Result<SecretValue>> {
        let queue = RefCell::new(list.iter().map(|answer| answer.to_string()).collect::<Vec<_>>());
        Some(move |_: &str| Ok(SecretValue::new(queue.borrow_mut().remove(0))))
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("xtask-secrets-password-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_password_file_wins_and_loses_one_trailing_newline() {
        let path = temp_file("file", "from file  \r\n");
        let password = read_with(&source(Some(&path), true), env_with("from env"), Some(never_asked)).unwrap();
        assert_eq!(password.expose(), "from file  ");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_environment_comes_before_the_terminal() {
        let password = read_with(&source(None, true), env_with("from env"), Some(never_asked)).unwrap();
        assert_eq!(password.expose(), "from env");
    }

    #[test]
    fn empty_passwords_are_refused_from_every_source() {
        let path = temp_file("empty", "\n");
        let err = read_with(&source(Some(&path), false), no_env, Some(never_asked)).unwrap_err();
        assert!(err.to_string().contains("empty password is refused"), "{err}");
        std::fs::remove_file(path).unwrap();
        let err = read_with(&source(None, false), env_with(""), Some(never_asked)).unwrap_err();
        assert!(err.to_string().contains("TEST_PASSWORD is set but empty"), "{err}");
        let err = read_with(&source(None, false), no_env, answers(&[""])).unwrap_err();
        assert!(err.to_string().contains("empty password is refused"), "{err}");
    }

    #[test]
    fn without_a_terminal_the_error_names_every_source() {
        let err = read_with(&source(None, false), no_env, None::<fn(&str) -> Result<SecretValue>>).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no password: set TEST_PASSWORD, pass --password-file PATH, or run in a terminal to be asked"
        );
    }

    #[test]
    fn the_prompt_asks_twice_when_confirming() {
        let password = read_with(&source(None, true), no_env, answers(&["same", "same"])).unwrap();
        assert_eq!(password.expose(), "same");
        let err = read_with(&source(None, true), no_env, answers(&["one", "two"])).unwrap_err();
        assert_eq!(err.to_string(), "the two passwords differ");
        let password = read_with(&source(None, false), no_env, answers(&["once"])).unwrap();
        assert_eq!(password.expose(), "once");
    }
}
