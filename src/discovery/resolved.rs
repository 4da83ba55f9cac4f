//! The systemd way to make every native process resolve `.kapell`: a resolved.conf drop-in under
//! `/run` (gone at reboot, removed when the responder stops) that makes the responder the server
//! of the routing-only domain `~kapell`, then a restart of systemd-resolved through the service
//! manager, since resolved reads its configuration files only when it starts.
//! On a host without resolved nothing is written, and `kapell status` says how to forward the
//! domain by hand.

use crate::systemd::Systemd;
use crate::unitfile::UnitText;
use anyhow::{Context, Result};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const UNIT: &str = "systemd-resolved.service";
const DROP_IN_DIR: &str = "/run/systemd/resolved.conf.d";
const DROP_IN: &str = "kapell.conf";
/// Where resolved writes its upstreams while it runs: its presence says resolved is running.
const RESOLVED_RUNNING: &str = "/run/systemd/resolve";

/// The drop-in's path (`KAPELL_RESOLVED_DIR` overrides the directory, for tests).
pub fn drop_in() -> PathBuf {
    std::env::var_os("KAPELL_RESOLVED_DIR").map_or_else(|| PathBuf::from(DROP_IN_DIR), PathBuf::from).join(DROP_IN)
}

/// Whether systemd-resolved runs on this host.
pub fn present() -> bool {
    Path::new(RESOLVED_RUNNING).is_dir()
}

/// The drop-in's text.
pub fn drop_in_text(server: IpAddr) -> String {
    let mut file = UnitText::new(&[
        "Written by `kapell dns` (kapell-dns.service), removed when it stops.",
        "Names under .kapell go to kapell's responder; every other name is resolved as before.",
    ]);
    file.section("Resolve").word("DNS", &server.to_string()).line("Domains", "~kapell");
    file.finish()
}

/// Routes `~kapell` to `server`: writes the drop-in (when it differs) and restarts resolved.
/// `Ok(false)`: this host has no resolved.
pub async fn route(systemd: &Systemd, server: IpAddr) -> Result<bool> {
    if !present() {
        return Ok(false);
    }
    let path = drop_in();
    let text = drop_in_text(server);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    restart(systemd).await?;
    Ok(true)
}

/// Takes the route away again (the responder stops).
pub async fn unroute(systemd: &Systemd) -> Result<()> {
    let path = drop_in();
    match std::fs::remove_file(&path) {
        Ok(()) => restart(systemd).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

async fn restart(systemd: &Systemd) -> Result<()> {
    let mut watcher = systemd.watch_jobs().await?;
    let job = systemd.restart(UNIT).await.with_context(|| format!("cannot restart {UNIT}"))?;
    let mut outcome = None;
    watcher.wait_all(systemd, std::slice::from_ref(&job), &[], |_, result| outcome = Some(result)).await?;
    match outcome {
        Some(result) if !result.is_success() => anyhow::bail!("{UNIT} did not restart: {result}"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_routes_the_domain_only() {
        let text = drop_in_text("127.0.0.153".parse().expect("ip"));
        assert!(text.contains("\n[Resolve]\nDNS=127.0.0.153\nDomains=~kapell\n"), "{text}");
        assert!(text.starts_with("# Written by `kapell dns`"), "{text}");
    }
}
