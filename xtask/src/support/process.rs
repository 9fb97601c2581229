//! Processes by pid and process group: is it running, stop its group.

use std::{fs, process::Command};

/// True while the process exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn kill_process_group(process_group: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{process_group}")])
        .stderr(std::process::Stdio::null())
        .status();
}
