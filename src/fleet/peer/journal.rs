//! The last journal lines of a failing unit, for the controller's report.

/// The unit's last `n` journal lines (what `journalctl -u UNIT -n N` shows), best effort: the
/// lines only explain a failure the reply already states.
pub fn last_lines(unit: &str, n: usize) -> Vec<String> {
    let output = std::process::Command::new("journalctl")
        .args(["--no-pager", "-o", "short", "-n", &n.to_string(), "-u", unit])
        .stdin(std::process::Stdio::null())
        .output();
    output.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
}
