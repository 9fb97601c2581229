//! `sandbox status`: each component of the state file with its address,
//! whether it still runs what was started and whether it answers; fails
//! unless all are up.

use anyhow::{Result, bail};

use super::environment::SandboxEnvironment;
use crate::support::ui;

/// Shows each component; exits non-zero unless all are up.
pub(super) fn status(sandbox: &SandboxEnvironment) -> Result<()> {
    let Some(state) = sandbox.read_state()? else {
        bail!("sandbox {} is not up: start it with `cargo xtask sandbox up`", sandbox.name);
    };
    let mut down = Vec::new();
    for component in &state.components {
        let running = component.is_ours();
        let answering = running && component.answers();
        let label = if answering {
            "up"
        } else {
            down.push(component.name.clone());
            if running { "not answering" } else { "down" }
        };
        let address =
            if component.name == "moto" { format!("http://{}", component.address) } else { component.address.clone() };
        ui::result(&format!(
            "{:<8}  {label:<13}  {address:<22}  pid {:<7}  log {}",
            component.name,
            component.pid,
            component.log.display()
        ));
    }
    let rejected = sandbox.rejected_requests()?;
    if !rejected.is_empty() {
        ui::warn(&format!(
            "{} request(s) were rejected as AWS would reject them (ValidationException); each is a line of {}",
            rejected.len(),
            sandbox.rejected_requests_file().display()
        ));
    }
    if !down.is_empty() {
        bail!(
            "sandbox {} is not fully up ({} down): `cargo xtask sandbox down` then `up`, or see the logs",
            sandbox.name,
            down.join(", ")
        );
    }
    Ok(())
}
