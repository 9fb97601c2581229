//! `cargo xtask secrets ...` and `install-hooks`, through the real binary,
//! with the real openssl CLI on the other side and files in private temp
//! directories. Every test that makes an operation fail then scans its
//! directories for the plaintext's marker: a failure must leave no
//! plaintext behind.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::support::{project_root, run, xtask};

const PASSWORD: &str = "integration test password, ünïcödé";
const DEMO_PASSWORD: &str = "demo-password-change-me";

/// A temp directory for one test: `work/` for the files, `tmp/` as the
/// binary's TMPDIR. Always removed, even when the test fails, because it
/// holds (test) secrets.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "xtask-secrets-test-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        for dir in ["work", "tmp", "bin"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        Scratch { root }
    }

    fn work(&self, name: &str) -> PathBuf {
        self.root.join("work").join(name)
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The binary with the password in its environment and this scratch
    /// directory as its TMPDIR; nothing inherited that could answer for it.
    fn secrets(&self, args: &[&str]) -> Command {
        let mut command = xtask();
        command
            .args(args)
            .env("SECRETS_PASSWORD", PASSWORD)
            .env("TMPDIR", self.tmp())
            .env("XDG_RUNTIME_DIR", self.tmp())
            .env_remove("SECRETS_NEW_PASSWORD")
            .env_remove("SECRETS_PASSWORD_FILE")
            .env_remove("SECRETS_NEW_PASSWORD_FILE")
            .env_remove("VISUAL")
            .env_remove("EDITOR")
            .stdin(Stdio::null());
        command
    }

    /// Writes a plaintext with `marker` in it and encrypts it to `name`
    /// with the binary; the plaintext is removed again.
    fn encrypt_new(&self, name: &str, marker: &str) -> PathBuf {
        let plain = self.work("input.tfvars");
        fs::write(&plain, plaintext(marker)).unwrap();
        let out = self.work(name);
        let (output, _, stderr) = checked(self.secrets(&["secrets", "encrypt", "--in", s(&plain), "--out", s(&out)]));
        assert!(output.status.success(), "{stderr}");
        fs::remove_file(plain).unwrap();
        out
    }

    /// A copy of the shared fixture at `name`: `plaintext(FIXTURE_MARKER)`
    /// as this build of the binary encrypts it.
    fn encrypted(&self, name: &str) -> PathBuf {
        let out = self.work(name);
        fs::copy(shared_fixture(), &out).unwrap();
        out
    }

    /// Fails when any file under the scratch directory (other than
    /// `allowed`) holds the marker, or when TMPDIR is not empty.
    fn assert_no_plaintext(&self, marker: &str, allowed: &[&Path]) {
        let mut found = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if !allowed.contains(&path.as_path())
                    && fs::read(&path).unwrap().windows(marker.len()).any(|window| window == marker.as_bytes())
                {
                    found.push(path);
                }
            }
        }
        assert!(found.is_empty(), "plaintext left behind in {found:?}");
        // The user's private directory may stay (empty); no file may.
        let leftovers: Vec<_> =
            files_under(&self.tmp()).into_iter().filter(|path| !allowed.contains(&path.as_path())).collect();
        assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");
    }

    /// An executable sh script in `bin/`.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.root.join("bin").join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files
}

/// The files of the repository that git does not track, ignored ones
/// included, outside `target/` (where other tests work in parallel).
fn untracked_files_in_repository() -> Vec<String> {
    let output = git(
        &project_root(),
        &["ls-files", "--others", "--exclude-standard", "--ignored", "--directory", "--no-empty-directory"],
    );
    let others = git(&project_root(), &["ls-files", "--others", "--exclude-standard"]);
    let mut files: Vec<String> = [output.stdout, others.stdout]
        .iter()
        .flat_map(|stdout| String::from_utf8_lossy(stdout).lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|path| !path.starts_with("target/"))
        .collect();
    files.sort();
    files.dedup();
    files
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The marker of the shared fixture's plaintext.
const FIXTURE_MARKER: &str = "MARKER-fixture-5e2a";

/// `plaintext(FIXTURE_MARKER)` encrypted by `secrets encrypt` of the binary
/// under test, once per build of it: the tests of the other commands start
/// from a copy. Every encryption costs a 600,000-iteration key derivation
/// (a third of a second of CPU), and 15 tests need an encrypted input; the
/// tests of `encrypt` itself run it. The file lives in cargo's
/// CARGO_TARGET_TMPDIR under the binary's size and modification time, so a
/// rebuilt binary makes it again. Tests run side by side in separate
/// processes: each that finds no fixture makes one and renames it into
/// place, and the rename is atomic, so every reader sees a whole file.
fn shared_fixture() -> PathBuf {
    let binary = fs::metadata(env!("CARGO_BIN_EXE_xtask")).unwrap();
    let modified = binary.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("secrets-fixture");
    let fixture = dir.join(format!("{}-{modified}.enc", binary.len()));
    if !fixture.exists() {
        let scratch = Scratch::new("fixture");
        let made = scratch.encrypt_new("fixture.enc", FIXTURE_MARKER);
        fs::create_dir_all(&dir).unwrap();
        // Unique per process and test thread, as the scratch directory is.
        let partial = dir.join(format!(".{}.partial", scratch.root.file_name().unwrap().to_string_lossy()));
        fs::copy(made, &partial).unwrap();
        fs::rename(partial, &fixture).unwrap();
    }
    fixture
}

fn plaintext(marker: &str) -> String {
    format!("# test secrets\ndb_password = \"{marker}\"\nport = 5432\n")
}

/// Runs the command and checks that the password never shows in its output.
fn checked(mut command: Command) -> (Output, String, String) {
    let (output, stdout, stderr) = run(&mut command);
    for password in [PASSWORD, "new password for the rekey test"] {
        assert!(!stdout.contains(password) && !stderr.contains(password), "password printed:\n{stdout}\n{stderr}");
    }
    (output, stdout, stderr)
}

fn assert_fails_with(command: Command, message: &str) -> String {
    let (output, stdout, stderr) = checked(command);
    assert_eq!(output.status.code(), Some(1), "expected exit code 1:\n{stdout}\n{stderr}");
    assert!(stderr.contains(message), "expected {message:?} in:\n{stderr}");
    stderr
}

fn openssl(args: &[&str], password: &str) -> Output {
    Command::new("openssl")
        .args(args)
        .args(["-pass", "env:TEST_PASSWORD"])
        .env("TEST_PASSWORD", password)
        .output()
        .expect("`openssl` is on PATH (apt-get install openssl)")
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("`git` is on PATH (apt-get install git)")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn encrypted_files_round_trip_through_openssl_and_decrypt_writes_mode_0600() {
    let scratch = Scratch::new("round-trip");
    let marker = "MARKER-round-trip-9d1c";
    let enc = scratch.encrypt_new("secrets.tfvars.enc", marker);
    assert!(fs::read(&enc).unwrap().starts_with(b"Salted__"));

    let output = openssl(
        &["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-md", "sha256", "-iter", "600000", "-in", s(&enc)],
        PASSWORD,
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let shown = String::from_utf8(output.stdout).unwrap();
    let content = plaintext(marker);
    assert!(shown.starts_with(&format!("{content}\n# xtask-secrets-mac: v2 ")), "{shown}");

    let out = scratch.work("decrypted.tfvars");
    let (output, _, stderr) = checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&out)]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(fs::read_to_string(&out).unwrap(), content);
    assert_eq!(mode(&out), 0o600);

    let (output, stdout, stderr) = checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--stdout"]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, content, "--stdout shows the content without the integrity line");
}

#[test]
fn the_ci_aliases_encrypt_and_decrypt() {
    let scratch = Scratch::new("aliases");
    let plain = scratch.work("secrets.tfvars");
    fs::write(&plain, plaintext("MARKER-alias")).unwrap();
    let enc = scratch.work("secrets.tfvars.enc");
    let (output, _, stderr) = checked(scratch.secrets(&["encrypt-secrets", "--in", s(&plain), "--out", s(&enc)]));
    assert!(output.status.success(), "{stderr}");
    let (output, stdout, stderr) = checked(scratch.secrets(&["decrypt-secrets", "--in", s(&enc), "--stdout"]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, plaintext("MARKER-alias"));
}

#[test]
fn a_file_from_plain_openssl_needs_allow_unauthenticated() {
    let scratch = Scratch::new("unauthenticated");
    let marker = "MARKER-plain-openssl";
    let plain = scratch.work("plain.tfvars");
    fs::write(&plain, plaintext(marker)).unwrap();
    let enc = scratch.work("secrets.tfvars.enc");
    let args = [
        "enc",
        "-aes-256-cbc",
        "-salt",
        "-pbkdf2",
        "-md",
        "sha256",
        "-iter",
        "600000",
        "-in",
        s(&plain),
        "-out",
        s(&enc),
    ];
    assert!(openssl(&args, PASSWORD).status.success());
    fs::remove_file(&plain).unwrap();

    let out = scratch.work("out.tfvars");
    assert_fails_with(
        scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&out)]),
        "--allow-unauthenticated",
    );
    scratch.assert_no_plaintext(marker, &[]);

    let (output, stdout, stderr) =
        checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--stdout", "--allow-unauthenticated"]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, plaintext(marker));
    assert!(stderr.contains("warning:") && stderr.contains("no integrity line"), "{stderr}");
}

#[test]
fn a_wrong_password_exits_1_and_leaves_the_existing_plaintext_alone() {
    let scratch = Scratch::new("wrong-password");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let out = scratch.work("secrets.tfvars");
    fs::write(&out, "old = \"local\"\n").unwrap();
    let mut command = scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&out)]);
    command.env("SECRETS_PASSWORD", "not the password");
    assert_fails_with(command, "wrong password");
    assert_eq!(fs::read_to_string(&out).unwrap(), "old = \"local\"\n");
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn a_file_that_is_not_encrypted_is_named() {
    let scratch = Scratch::new("not-openssl");
    let plain = scratch.work("secrets.tfvars");
    fs::write(&plain, plaintext("MARKER-not-openssl")).unwrap();
    let stderr =
        assert_fails_with(scratch.secrets(&["secrets", "check", "--in", s(&plain)]), "not an openssl-encrypted file");
    assert!(stderr.contains("is it the decrypted file?"), "{stderr}");
}

#[test]
fn tampered_truncated_and_extended_files_are_rejected() {
    let scratch = Scratch::new("tampered");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let original = fs::read(&enc).unwrap();
    let mut flipped = original.clone();
    flipped[40] ^= 0x01;
    let truncated = original[..original.len() - 16].to_vec();
    let mut extended = original.clone();
    extended.extend([0x42; 16]);
    let out = scratch.work("out.tfvars");
    for (what, bytes) in [("flipped", flipped), ("truncated", truncated), ("extended", extended)] {
        let damaged = scratch.work(&format!("{what}.enc"));
        fs::write(&damaged, bytes).unwrap();
        let stderr = assert_fails_with(
            scratch.secrets(&["secrets", "decrypt", "--in", s(&damaged), "--out", s(&out)]),
            "corrupted or was tampered with",
        );
        assert!(!stderr.contains("wrong password"), "{what}: {stderr}");
        assert!(!out.exists());
    }
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn passwords_come_from_a_file_or_the_environment_never_argv_and_never_empty() {
    let scratch = Scratch::new("passwords");
    let enc = scratch.encrypted("secrets.tfvars.enc");

    let mut command = scratch.secrets(&["secrets", "check", "--in", s(&enc)]);
    command.env("SECRETS_PASSWORD", "");
    assert_fails_with(command, "SECRETS_PASSWORD is set but empty: an empty password is refused");

    let mut command = scratch.secrets(&["secrets", "check", "--in", s(&enc)]);
    command.env_remove("SECRETS_PASSWORD");
    assert_fails_with(command, "no password: set SECRETS_PASSWORD, pass --password-file PATH");

    let password_file = scratch.work("password");
    fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut command = scratch.secrets(&["secrets", "check", "--in", s(&enc), "--password-file", s(&password_file)]);
    command.env("SECRETS_PASSWORD", "the file wins over this");
    let (output, _, stderr) = checked(command);
    assert!(output.status.success(), "{stderr}");

    let (output, _, stderr) = checked(scratch.secrets(&["secrets", "check", "--in", s(&enc), "--password", PASSWORD]));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unexpected argument '--password'"), "{stderr}");
}

#[test]
fn decrypt_refuses_a_path_that_git_would_commit() {
    let scratch = Scratch::new("git-ignore");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let repo = scratch.work("repo");
    fs::create_dir(&repo).unwrap();
    assert!(git(&repo, &["init", "-q"]).status.success());
    fs::write(repo.join(".gitignore"), "secrets.tfvars\n").unwrap();

    let tracked = repo.join("notes.tfvars");
    let stderr = assert_fails_with(
        scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&tracked)]),
        "git does not ignore it",
    );
    assert!(!stderr.contains("Password"), "refused before asking for a password: {stderr}");
    assert!(!tracked.exists());
    scratch.assert_no_plaintext(marker, &[]);

    let ignored = repo.join("secrets.tfvars");
    let (output, _, stderr) = checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&ignored)]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(fs::read_to_string(&ignored).unwrap(), plaintext(marker));
}

#[test]
fn decrypt_writes_outside_the_repository_and_encrypt_reads_it_back() {
    let scratch = Scratch::new("private-dir");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let before = untracked_files_in_repository();

    // Inside the repository is refused even where git ignores the path.
    let inside = project_root().join("secrets.tfvars");
    let stderr = assert_fails_with(
        scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&inside)]),
        "is inside the repository",
    );
    assert!(!stderr.contains("Password"), "refused before asking for a password: {stderr}");
    assert!(!inside.exists());

    let (output, _, stderr) = checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc)]));
    assert!(output.status.success(), "{stderr}");
    let written = files_under(&scratch.tmp());
    assert_eq!(written.len(), 1, "{written:?}");
    let plain = &written[0];
    assert!(stderr.contains(s(plain)), "the path is not announced: {stderr}");
    assert_eq!(plain.file_name().unwrap(), "secrets.tfvars");
    assert_eq!(mode(plain), 0o600);
    assert_eq!(mode(plain.parent().unwrap()), 0o700);
    assert_eq!(mode(plain.parent().unwrap().parent().unwrap()), 0o700);
    assert_eq!(fs::read_to_string(plain).unwrap(), plaintext(marker));

    // encrypt's default input is what decrypt wrote.
    let again = scratch.work("again.enc");
    let (output, _, stderr) = checked(scratch.secrets(&["secrets", "encrypt", "--out", s(&again)]));
    assert!(output.status.success(), "{stderr}");
    let (_, stdout, _) = checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&again), "--stdout"]));
    assert_eq!(stdout, plaintext(marker));
    assert_eq!(untracked_files_in_repository(), before, "a file appeared in the repository");
    scratch.assert_no_plaintext(marker, &[plain]);
}

#[test]
fn ctrl_c_during_edit_leaves_no_plaintext_anywhere() {
    use std::os::unix::process::CommandExt;
    let scratch = Scratch::new("edit-interrupted");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let before = untracked_files_in_repository();
    let ready = scratch.root.join("bin/editor-ready");
    let editor = scratch.script(
        "editor",
        &format!(
            "touch '{}'
sleep 30",
            ready.display()
        ),
    );
    let mut command = scratch.secrets(&["secrets", "edit", "--in", s(&enc)]);
    command.env("EDITOR", &editor).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "the editor never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The plaintext is there while the editor runs...
    assert_eq!(files_under(&scratch.tmp()).len(), 1);
    // ...and gone after Ctrl-C, as a terminal sends it: to the whole group.
    let group = format!("-{}", child.id());
    assert!(Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cleanup: remove"), "{stderr}");
    scratch.assert_no_plaintext(marker, &[]);
    assert_eq!(untracked_files_in_repository(), before, "a file appeared in the repository");
}

#[test]
fn decrypt_asks_before_overwriting_a_different_plaintext() {
    let scratch = Scratch::new("overwrite");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let out = scratch.work("secrets.tfvars");
    fs::write(&out, "local = \"edit\"\n").unwrap();
    assert_fails_with(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--out", s(&out)]), "pass --yes");
    assert_eq!(fs::read_to_string(&out).unwrap(), "local = \"edit\"\n");
    let (output, _, stderr) =
        checked(scratch.secrets(&["--yes", "secrets", "decrypt", "--in", s(&enc), "--out", s(&out)]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(fs::read_to_string(&out).unwrap(), plaintext(marker));
}

#[test]
fn encrypt_refuses_a_file_that_is_not_tfvars_and_names_the_line() {
    let scratch = Scratch::new("invalid-tfvars");
    let plain = scratch.work("secrets.tfvars");
    fs::write(&plain, "db_password = \"x\"\nport = \n").unwrap();
    let enc = scratch.work("secrets.tfvars.enc");
    let stderr = assert_fails_with(
        scratch.secrets(&["secrets", "encrypt", "--in", s(&plain), "--out", s(&enc)]),
        "secrets.tfvars:2: port has no value",
    );
    assert!(!stderr.contains("\"x\""), "{stderr}");
    assert!(!enc.exists());
}

#[test]
fn encrypting_unchanged_content_leaves_the_file_alone() {
    let scratch = Scratch::new("unchanged");
    let plain = scratch.work("secrets.tfvars");
    fs::write(&plain, plaintext("MARKER-unchanged")).unwrap();
    let enc = scratch.work("secrets.tfvars.enc");
    let encrypt = || scratch.secrets(&["secrets", "encrypt", "--in", s(&plain), "--out", s(&enc)]);
    assert!(checked(encrypt()).0.status.success());
    let first = fs::read(&enc).unwrap();
    let (output, _, stderr) = checked(encrypt());
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("left unchanged"), "{stderr}");
    assert_eq!(fs::read(&enc).unwrap(), first);

    // Another password would lock the team out: it takes a confirmation.
    let mut command = encrypt();
    command.env("SECRETS_PASSWORD", "someone else's password");
    assert_fails_with(command, "does not decrypt with this password");
    assert_eq!(fs::read(&enc).unwrap(), first);
}

#[test]
fn check_verifies_and_names_the_variables_without_writing_or_printing_values() {
    let scratch = Scratch::new("check");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let (output, stdout, stderr) = checked(scratch.secrets(&["secrets", "check", "--in", s(&enc)]));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is intact") && stderr.contains("TF_VAR_db_password (string), TF_VAR_port (number)"),
        "{stderr}"
    );
    assert!(!stdout.contains(marker) && !stderr.contains(marker));
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn rekey_changes_the_password() {
    let scratch = Scratch::new("rekey");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let new_password = "new password for the rekey test";
    let mut command = scratch.secrets(&["secrets", "rekey", "--in", s(&enc)]);
    command.env("SECRETS_NEW_PASSWORD", new_password);
    let (output, _, stderr) = checked(command);
    assert!(output.status.success(), "{stderr}");

    assert_fails_with(scratch.secrets(&["secrets", "check", "--in", s(&enc)]), "wrong password");
    let mut command = scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--stdout"]);
    command.env("SECRETS_PASSWORD", new_password);
    let (output, stdout, stderr) = checked(command);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, plaintext(marker));
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn rekey_upgrades_legacy_files() {
    let scratch = Scratch::new("legacy");
    for md in ["md5", "sha256"] {
        let marker = format!("MARKER-legacy-{md}");
        let plain = scratch.work("legacy.tfvars");
        fs::write(&plain, plaintext(&marker)).unwrap();
        let enc = scratch.work(&format!("legacy-{md}.enc"));
        let args = ["enc", "-aes-256-cbc", "-salt", "-md", md, "-in", s(&plain), "-out", s(&enc)];
        let output = openssl(&args, PASSWORD);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        fs::remove_file(&plain).unwrap();

        assert_fails_with(scratch.secrets(&["secrets", "check", "--in", s(&enc)]), &format!("--legacy-kdf {md}"));
        let upgraded = scratch.work(&format!("upgraded-{md}.enc"));
        let mut command =
            scratch.secrets(&["secrets", "rekey", "--in", s(&enc), "--out", s(&upgraded), "--legacy-kdf", md]);
        command.env("SECRETS_NEW_PASSWORD", PASSWORD);
        let (output, _, stderr) = checked(command);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("no integrity line"), "legacy files are read with a warning: {stderr}");

        let (output, _, stderr) = checked(scratch.secrets(&["secrets", "check", "--in", s(&upgraded)]));
        assert!(output.status.success() && stderr.contains("is intact"), "{stderr}");
        scratch.assert_no_plaintext(&marker, &[]);
    }
}

#[test]
fn dry_run_changes_nothing() {
    let scratch = Scratch::new("dry-run");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let plain = scratch.work("secrets.tfvars");
    fs::write(&plain, plaintext(marker)).unwrap();
    let out = scratch.work("new.enc");
    let decrypted = scratch.work("out.tfvars");
    let repo = scratch.work("repo");
    fs::create_dir(&repo).unwrap();
    assert!(git(&repo, &["init", "-q"]).status.success());
    let snapshot = || {
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut pending = vec![scratch.root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    files.push((path.clone(), fs::read(&path).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot();
    let tasks: [&[&str]; 6] = [
        &["secrets", "encrypt", "--in", s(&plain), "--out", s(&out)],
        &["secrets", "decrypt", "--in", s(&enc), "--out", s(&decrypted)],
        &["secrets", "edit", "--in", s(&enc)],
        &["secrets", "rekey", "--in", s(&enc)],
        &["secrets", "check", "--in", s(&enc)],
        &["install-hooks", "--repo", s(&repo)],
    ];
    for args in tasks {
        let mut command = scratch.secrets(&["--dry-run"]);
        command.args(args).env_remove("SECRETS_PASSWORD");
        let (output, stdout, stderr) = checked(command);
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(stdout.starts_with("would "), "{args:?}: {stdout}");
    }
    assert!(snapshot() == before, "a dry run changed files");
}

/// The editor scripts log what they saw to `bin/editor.log`: the temp
/// file's mode and whether it lies under the test's TMPDIR.
fn editor(scratch: &Scratch, action: &str) -> PathBuf {
    let log = scratch.root.join("bin/editor.log");
    scratch.script(
        "editor",
        &format!(
            "stat -c %a \"$1\" > '{log}'\ncase \"$1\" in '{tmp}'/*) echo in-tmpdir >> '{log}';; esac\n{action}",
            log = log.display(),
            tmp = scratch.tmp().display()
        ),
    )
}

fn edit(scratch: &Scratch, enc: &Path, editor: &Path) -> (Output, String, String) {
    let mut command = scratch.secrets(&["secrets", "edit", "--in", s(enc)]);
    command.env("EDITOR", editor);
    checked(command)
}

fn assert_editor_saw_a_private_temp_file(scratch: &Scratch) {
    let log = fs::read_to_string(scratch.root.join("bin/editor.log")).unwrap();
    assert_eq!(log, "600\nin-tmpdir\n");
}

#[test]
fn edit_without_changes_rewrites_nothing() {
    let scratch = Scratch::new("edit-unchanged");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let before = (fs::read(&enc).unwrap(), fs::metadata(&enc).unwrap().modified().unwrap());
    let (output, _, stderr) = edit(&scratch, &enc, &editor(&scratch, "exit 0"));
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("no changes"), "{stderr}");
    assert_eq!((fs::read(&enc).unwrap(), fs::metadata(&enc).unwrap().modified().unwrap()), before);
    assert_editor_saw_a_private_temp_file(&scratch);
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn edit_with_changes_re_encrypts() {
    let scratch = Scratch::new("edit-changed");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let (output, _, stderr) = edit(&scratch, &enc, &editor(&scratch, "printf 'api_key = \"added\"\\n' >> \"$1\""));
    assert!(output.status.success(), "{stderr}");
    assert_editor_saw_a_private_temp_file(&scratch);
    scratch.assert_no_plaintext(marker, &[]);
    let (output, stdout, stderr) = checked(scratch.secrets(&["secrets", "decrypt", "--in", s(&enc), "--stdout"]));
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, format!("{}api_key = \"added\"\n", plaintext(marker)));
}

#[test]
fn edit_with_a_failing_editor_changes_nothing() {
    let scratch = Scratch::new("edit-failing");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let before = fs::read(&enc).unwrap();
    let editor = editor(&scratch, "printf 'api_key = \"lost\"\\n' >> \"$1\"\nexit 1");
    let mut command = scratch.secrets(&["secrets", "edit", "--in", s(&enc)]);
    command.env("EDITOR", &editor);
    assert_fails_with(command, "failed");
    assert_eq!(fs::read(&enc).unwrap(), before);
    assert_editor_saw_a_private_temp_file(&scratch);
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn edit_that_breaks_the_syntax_is_refused() {
    let scratch = Scratch::new("edit-broken");
    let marker = FIXTURE_MARKER;
    let enc = scratch.encrypted("secrets.tfvars.enc");
    let before = fs::read(&enc).unwrap();
    let editor = editor(&scratch, "printf 'broken = \\n' >> \"$1\"");
    let mut command = scratch.secrets(&["secrets", "edit", "--in", s(&enc)]);
    command.env("EDITOR", &editor);
    let stderr = assert_fails_with(command, "left unchanged");
    assert!(stderr.contains(":4: broken has no value"), "{stderr}");
    assert_eq!(fs::read(&enc).unwrap(), before);
    scratch.assert_no_plaintext(marker, &[]);
}

#[test]
fn the_pre_commit_hook_refuses_plaintext_and_broken_encrypted_files() {
    let scratch = Scratch::new("hook");
    let repo = scratch.work("repo");
    fs::create_dir(&repo).unwrap();
    assert!(git(&repo, &["init", "-q"]).status.success());
    let (output, _, stderr) = checked(scratch.secrets(&["install-hooks", "--repo", s(&repo)]));
    assert!(output.status.success(), "{stderr}");
    let hook = repo.join(".git/hooks/pre-commit");
    assert_eq!(mode(&hook), 0o755);
    let (output, _, stderr) = checked(scratch.secrets(&["install-hooks", "--repo", s(&repo)]));
    assert!(output.status.success() && stderr.contains("already installed"), "{stderr}");

    let good = scratch.encrypted("good.enc");
    fs::create_dir(repo.join("env")).unwrap();
    // The hook learns which variables are secret from the tracked Terraform.
    fs::write(
        repo.join("variables.tf"),
        "variable \"region\" {\n  type = string\n}\n\nvariable \"db_password\" {\n  type      = string\n  sensitive = true\n}\n",
    )
    .unwrap();
    assert!(git(&repo, &["add", "variables.tf"]).status.success());
    let refused: [(&str, Vec<u8>, &str); 6] = [
        ("secrets.tfvars", b"db_password = \"x\"\n".to_vec(), "holds decrypted secrets"),
        ("env/secrets.tfvars", b"db_password = \"x\"\n".to_vec(), "holds decrypted secrets"),
        ("env/app.tfvars.plain", b"db_password = \"x\"\n".to_vec(), "holds decrypted secrets"),
        (
            "env/dev.tfvars",
            b"region = \"eu-west-1\"\n  db_password = \"x\"\n".to_vec(),
            "sets db_password, a sensitive",
        ),
        ("secrets.tfvars.enc", b"db_password = \"x\"\n".to_vec(), "not an encrypted file"),
        ("short.enc", [b"Salted__".as_slice(), &[0; 8], &[1; 24]].concat(), "not an encrypted file"),
    ];
    for (path, content, message) in refused {
        fs::write(repo.join(path), content).unwrap();
        assert!(git(&repo, &["add", "-f", path]).status.success());
        let output = git(&repo, &["commit", "-q", "-m", "test"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{path} was committed");
        assert!(stderr.contains(&format!("refusing to commit {path}")) && stderr.contains(message), "{path}: {stderr}");
        assert!(git(&repo, &["rm", "-q", "--cached", path]).status.success());
    }

    fs::copy(&good, repo.join("secrets.tfvars.enc")).unwrap();
    fs::write(repo.join("main.tf"), "# not a secret\n").unwrap();
    fs::write(repo.join("env/dev.tfvars"), "region = \"eu-west-1\"\n").unwrap();
    assert!(git(&repo, &["add", "secrets.tfvars.enc", "main.tf", "env/dev.tfvars"]).status.success());
    let output = git(&repo, &["commit", "-q", "-m", "encrypted secrets"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn install_hooks_keeps_a_hook_it_did_not_write_unless_forced() {
    let scratch = Scratch::new("hook-force");
    let repo = scratch.work("repo");
    fs::create_dir(&repo).unwrap();
    assert!(git(&repo, &["init", "-q"]).status.success());
    let hook = repo.join(".git/hooks/pre-commit");
    fs::create_dir_all(hook.parent().unwrap()).unwrap();
    fs::write(&hook, "#!/bin/sh\necho theirs\n").unwrap();
    assert_fails_with(scratch.secrets(&["install-hooks", "--repo", s(&repo)]), "not written by xtask");
    assert_eq!(fs::read_to_string(&hook).unwrap(), "#!/bin/sh\necho theirs\n");
    let (output, _, stderr) = checked(scratch.secrets(&["install-hooks", "--repo", s(&repo), "--force"]));
    assert!(output.status.success(), "{stderr}");
    assert!(fs::read_to_string(&hook).unwrap().contains("xtask-secrets-hook"));
    assert_eq!(mode(&hook), 0o755);
}

#[test]
fn the_shipped_file_checks_with_the_demo_password_and_git_ignores_its_plaintext() {
    let root = project_root();
    assert!(git(&root, &["check-ignore", "-q", "secrets.tfvars"]).status.success());
    let scratch = Scratch::new("shipped");
    let mut command = scratch.secrets(&["secrets", "check"]);
    command.env("SECRETS_PASSWORD", DEMO_PASSWORD);
    let (output, _, stderr) = checked(command);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("is intact") && stderr.contains("TF_VAR_db_password"), "{stderr}");
}
