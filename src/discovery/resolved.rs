//! The systemd way to make every native process resolve `.kapell`: resolved's per-link DNS
//! settings, made through its D-Bus API on a link of kapell's own ([`super::link`]): the
//! responder is that link's only server, for the routing-only domain `~kapell`, and never a
//! default route. Every other name is resolved exactly as before, by the servers the operator
//! configured, and the operator's own global `DNS=` servers never see a `.kapell` question.
//!
//! (A resolved.conf drop-in cannot say this: its `DNS=` adds a *global* server, which shares the
//! global scope, and so both the `.kapell` names and every other name, with the operator's global
//! servers, whichever resolved happens to be using.)
//!
//! resolved keeps the settings across its own restarts and drops them with the link, which the
//! responder deletes when it stops. On a host without resolved nothing is done, and
//! `kapell status` says how to forward the domain by hand.

use super::link;
use crate::systemd::{ResolveManagerProxy, Systemd};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Where resolved writes its upstreams while it runs: its presence says resolved is running.
const RESOLVED_RUNNING: &str = "/run/systemd/resolve";
/// How long resolved may take to notice a new link before it accepts settings for it.
const LINK_NOTICED_WITHIN: Duration = Duration::from_secs(5);

/// Whether systemd-resolved runs on this host.
pub fn present() -> bool {
    Path::new(RESOLVED_RUNNING).is_dir()
}

/// Routes `~kapell` to `server` through [`link::NAME`]. `Ok(false)`: this host has no resolved.
pub async fn route(systemd: &Systemd, server: SocketAddr) -> Result<bool> {
    if !present() {
        return Ok(false);
    }
    let resolve = systemd.resolve().await?;
    let routed = async {
        let (index, peer) = link::create(server.ip()).await?;
        set_up(&resolve, server, index, peer).await
    }
    .await;
    if routed.is_err() {
        // Half a route is none: a pair made before the step that failed goes again, and the
        // warning says why.
        let _ = link::delete().await;
    }
    routed.map(|()| true)
}

async fn set_up(resolve: &ResolveManagerProxy<'_>, server: SocketAddr, index: u32, peer: u32) -> Result<()> {
    let (index, peer) = (as_ifindex(index)?, as_ifindex(peer)?);
    let family = if server.is_ipv4() { nix::libc::AF_INET } else { nix::libc::AF_INET6 };
    let octets = match server.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    // Port 53 in the call every resolved has; another port (`kapell dns --port`) only in the
    // call that carries one, or resolved would ask port 53, where nothing answers.
    let give = || async {
        match server.port() {
            53 => resolve.set_link_dns(index, &[(family, &octets)]).await,
            port => resolve.set_link_dns_ex(index, &[(family, &octets, port, "")]).await,
        }
    };
    // resolved learns of the link from netlink, a moment after it exists.
    let deadline = tokio::time::Instant::now() + LINK_NOTICED_WITHIN;
    loop {
        match give().await {
            Ok(()) => break,
            Err(e) if no_such_link(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(crate::systemd::dbus_error(e))
                    .with_context(|| format!("cannot give {} the DNS server {server}", link::NAME));
            }
        }
    }
    configure(resolve, index, peer)
        .await
        .map_err(crate::systemd::dbus_error)
        .with_context(|| format!("cannot set {}'s DNS settings", link::NAME))
}

/// `~kapell` only and never a default route; no LLMNR or mDNS on either end of the pair, no
/// DNSSEC for the responder's unsigned answers (an operator's `DNSSEC=yes` would refuse them),
/// and no DNS over TLS, which the responder does not speak (an operator's `DNSOverTLS=yes` would
/// fail every name, `opportunistic` try TLS first every time).
async fn configure(resolve: &ResolveManagerProxy<'_>, index: i32, peer: i32) -> zbus::Result<()> {
    resolve.set_link_domains(index, &[("kapell", true)]).await?;
    resolve.set_link_default_route(index, false).await?;
    resolve.set_link_dnssec(index, "no").await?;
    resolve.set_link_dns_over_tls(index, "no").await?;
    for i in [index, peer] {
        resolve.set_link_llmnr(i, "no").await?;
        resolve.set_link_multicast_dns(i, "no").await?;
    }
    Ok(())
}

/// Takes the route away again (the responder stops): the link goes, and resolved's settings
/// for it with it.
pub async fn unroute() -> Result<()> {
    link::delete().await
}

fn no_such_link(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.freedesktop.resolve1.NoSuchLink")
}

fn as_ifindex(index: u32) -> Result<i32> {
    i32::try_from(index).context("an interface index beyond i32")
}
