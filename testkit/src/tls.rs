//! A certificate authority for one test, made with the openssl CLI (the real
//! tool, not a library's test helper): a CA and a server certificate it
//! signs for the names a test connects to. Files in a `ServiceDir`:
//! `ca.pem`, `server.pem`, `server.key`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::process::ServiceDir;

pub struct TestCa {
    dir: ServiceDir,
}

impl TestCa {
    /// A CA and a server certificate for `subject_alt_names`, e.g.
    /// `IP:127.0.0.1, DNS:localhost`. Valid for two days.
    pub fn new(name: &str, subject_alt_names: &str) -> TestCa {
        let dir = ServiceDir::new(name);
        let openssl = |args: &[&str]| {
            let openssl = crate::which("openssl", "apt-get install openssl");
            let output = Command::new(openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|err| panic!("running openssl: {err}"));
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let subject = format!("/CN={name} CA");
        let rsa = ["-newkey", "rsa:2048", "-nodes", "-days", "2"];
        openssl(&[&["req", "-x509"][..], &rsa, &["-keyout", "ca.key", "-out", "ca.pem", "-subj", &subject]].concat());
        let csr = ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=test server"];
        openssl(&[&["req"][..], &rsa[..2], &rsa[2..3], &csr].concat());
        std::fs::write(dir.path().join("san.ext"), format!("subjectAltName = {subject_alt_names}\n"))
            .unwrap_or_else(|err| panic!("writing san.ext: {err}"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        TestCa { dir }
    }

    /// A file of the CA's directory: `ca.pem`, `server.pem`, `server.key`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
