//! The prerequisites of each [`Need`], checked: what is present (and where),
//! what is missing and the fix, and the one command that installs it all.
//! `setup`, `ensure` and `doctor` read the same report, so they never
//! disagree.

use anyhow::{Result, bail};

use super::{
    Need,
    apt::{apt, command, groovy, postgres},
    cargo_tools::{CARGO_TOOLS, cargo_tool},
    manual::{docker_daemon, terraform},
    python::{ISOLATED_PYTHON_TOOLS, PYTHON_TOOLS, isolated_python_tool, python_tool, python_venv},
};
use crate::support::ui;

/// A prerequisite as `doctor` shows it: what was found (and where), or what
/// it is for and the fix.
pub struct Finding {
    pub name: &'static str,
    pub result: std::result::Result<String, String>,
}

/// Every prerequisite of `need`, checked the way `setup` and `ensure`
/// check them: one list, so `doctor` and `setup --check` never disagree.
pub fn findings(need: Need) -> Vec<Finding> {
    Report::gather(need)
        .items
        .into_iter()
        .map(|item| Finding {
            name: item.name,
            result: match item.state {
                State::Present(found) => Ok(found),
                State::Missing => Err(format!("{}: {}", item.purpose, fix(&item.how))),
            },
        })
        .collect()
}

/// One prerequisite and how it is met.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) name: &'static str,
    /// What uses it, for the report.
    pub(super) purpose: &'static str,
    pub(super) state: State,
    pub(super) how: How,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    Present(String),
    Missing,
}

#[derive(Debug, Clone)]
pub(super) enum How {
    Apt(&'static [&'static str]),
    Python(&'static str),
    /// A Python tool in a virtual environment of its own.
    IsolatedPython {
        requirement: &'static str,
        command: &'static str,
    },
    /// `cargo install --locked CRATE --version VERSION`.
    Cargo {
        krate: &'static str,
        version: &'static str,
    },
    /// Only a person can fix it: the fix.
    Manual(String),
}

pub(super) struct Report {
    items: Vec<Item>,
}

impl Report {
    pub(super) fn gather(need: Need) -> Report {
        let everything = need == Need::Everything;
        let deploy = need == Need::LocalDeploy || everything;
        let quick = need == Need::QuickTests || everything;
        let mut items = vec![
            apt("git", "the image's revision, the deploy's working-tree check", &["git"], command("git")),
            apt("postgresql", "the local database and the tests' throwaway ones", &["postgresql"], postgres()),
        ];
        if deploy {
            items.extend([
                apt(
                    "debootstrap",
                    "offline base images (a machine that cannot pull)",
                    &["debootstrap"],
                    command("debootstrap"),
                ),
                docker_daemon(),
            ]);
        }
        if quick {
            items.extend([
                apt("openssl", "the secrets tests (the openssl CLI)", &["openssl"], command("openssl")),
                apt("zsh", "the completions tests", &["zsh"], command("zsh")),
                apt("fish", "the completions tests", &["fish"], command("fish")),
                apt("groovy", "the Jenkinsfile test", &["groovy", "default-jre-headless"], groovy()),
                apt("python3-venv", "the project's Python environment", &["python3-venv"], python_venv()),
                terraform(),
            ]);
        }
        if everything {
            items.extend([
                apt(
                    "docker-registry",
                    "the registry of tests and the sandbox",
                    &["docker-registry"],
                    command("docker-registry"),
                ),
                apt(
                    "htpasswd",
                    "registry credentials in tests and the sandbox",
                    &["apache2-utils"],
                    command("htpasswd"),
                ),
                apt("chromium", "the page test in headless Chromium", &["chromium"], command("chromium")),
            ]);
        }
        for (requirement, binary, needed_by_quick) in PYTHON_TOOLS {
            if everything || (quick && *needed_by_quick) {
                items.push(python_tool(binary, requirement));
            }
        }
        if everything {
            items.extend(
                ISOLATED_PYTHON_TOOLS.iter().map(|&(requirement, command)| isolated_python_tool(command, requirement)),
            );
            items.extend(CARGO_TOOLS.iter().map(|&(krate, version, binary)| cargo_tool(krate, version, binary)));
        }
        Report { items }
    }

    pub(super) fn missing(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|item| item.state == State::Missing)
    }

    pub(super) fn apt_packages(&self) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = self
            .missing()
            .filter_map(|item| match item.how {
                How::Apt(packages) => Some(packages),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
        packages.dedup();
        packages
    }

    pub(super) fn python_requirements(&self) -> Vec<&'static str> {
        self.missing()
            .filter_map(|item| match item.how {
                How::Python(requirement) => Some(requirement),
                _ => None,
            })
            .collect()
    }

    pub(super) fn isolated_python_tools(&self) -> Vec<(&'static str, &'static str)> {
        self.missing()
            .filter_map(|item| match item.how {
                How::IsolatedPython { requirement, command } => Some((requirement, command)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn cargo_tools(&self) -> Vec<(&'static str, &'static str)> {
        self.missing()
            .filter_map(|item| match item.how {
                How::Cargo { krate, version } => Some((krate, version)),
                _ => None,
            })
            .collect()
    }

    /// The one command that installs everything installable that is missing.
    pub(super) fn one_command(&self) -> String {
        let mut parts = Vec::new();
        let packages = self.apt_packages();
        if !packages.is_empty() {
            parts.push(format!(
                "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            ));
        }
        let builds = !self.isolated_python_tools().is_empty() || !self.cargo_tools().is_empty();
        if !packages.is_empty() || !self.python_requirements().is_empty() || builds {
            parts.push("cargo xtask setup".to_owned());
        }
        let manual: Vec<String> = self
            .missing()
            .filter_map(|item| match &item.how {
                How::Manual(fix) => Some(format!("{}: {fix}", item.name)),
                _ => None,
            })
            .collect();
        let mut text = parts.join(" && ");
        if !manual.is_empty() {
            let by_hand = format!("by hand: {}", manual.join("; "));
            text = if text.is_empty() { by_hand } else { format!("{text}; and {by_hand}") };
        }
        text
    }

    pub(super) fn print(&self) {
        let width = self.items.iter().map(|item| item.name.len()).max().unwrap_or(0);
        for item in &self.items {
            match &item.state {
                State::Present(found) => ui::info(&format!("  ok       {:<width$}  {found}", item.name)),
                State::Missing => {
                    ui::info(&format!("  MISSING  {:<width$}  {}: {}", item.name, item.purpose, fix(&item.how)))
                }
            }
        }
    }

    pub(super) fn print_missing(&self) {
        for item in self.missing() {
            ui::warn(&format!("missing {} ({}): {}", item.name, item.purpose, fix(&item.how)));
        }
    }

    pub(super) fn fail_if_missing(&self) -> Result<()> {
        let missing: Vec<&str> = self.missing().map(|item| item.name).collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!("{} missing: {}; to install them: {}", missing.len(), missing.join(", "), self.one_command())
    }
}

fn fix(how: &How) -> String {
    match how {
        How::Apt(packages) => format!("apt-get install {}", packages.join(" ")),
        How::Python(requirement) => format!("cargo xtask setup (pip install '{requirement}' into target/tools/python)"),
        How::IsolatedPython { requirement, command } => {
            format!("cargo xtask setup (pip install '{requirement}' into target/tools/{command})")
        }
        How::Cargo { krate, version } => {
            format!("cargo xtask setup (cargo install --locked {krate} --version {version} into target/tools/cargo)")
        }
        How::Manual(fix) => fix.clone(),
    }
}
