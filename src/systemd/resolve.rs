//! The parts of systemd-resolved's manager (`org.freedesktop.resolve1`, see
//! org.freedesktop.resolve1(5)) that `kapell dns` calls: the per-link settings `resolvectl dns`,
//! `resolvectl domain`, `resolvectl default-route`, `resolvectl llmnr`, `resolvectl mdns`,
//! `resolvectl dnssec` and `resolvectl dnsovertls` make. resolved keeps them across its own restarts (under
//! `/run/systemd/resolve/netif/`) and forgets them with the link.

use zbus::proxy;

#[proxy(
    interface = "org.freedesktop.resolve1.Manager",
    default_service = "org.freedesktop.resolve1",
    default_path = "/org/freedesktop/resolve1"
)]
pub trait ResolveManager {
    /// The link's DNS servers: (address family, address bytes) each.
    #[zbus(name = "SetLinkDNS")]
    fn set_link_dns(&self, ifindex: i32, addresses: &[(i32, &[u8])]) -> zbus::Result<()>;

    /// [`Self::set_link_dns`] with a port (0: 53) and a TLS server name each (systemd 246 on).
    #[zbus(name = "SetLinkDNSEx")]
    fn set_link_dns_ex(&self, ifindex: i32, addresses: &[(i32, &[u8], u16, &str)]) -> zbus::Result<()>;

    /// The link's domains: (domain, routing only) each; `("kapell", true)` is `~kapell`.
    fn set_link_domains(&self, ifindex: i32, domains: &[(&str, bool)]) -> zbus::Result<()>;

    /// Whether names no link's domains match may be sent to the link's servers.
    fn set_link_default_route(&self, ifindex: i32, enable: bool) -> zbus::Result<()>;

    #[zbus(name = "SetLinkLLMNR")]
    fn set_link_llmnr(&self, ifindex: i32, mode: &str) -> zbus::Result<()>;

    #[zbus(name = "SetLinkMulticastDNS")]
    fn set_link_multicast_dns(&self, ifindex: i32, mode: &str) -> zbus::Result<()>;

    #[zbus(name = "SetLinkDNSSEC")]
    fn set_link_dnssec(&self, ifindex: i32, mode: &str) -> zbus::Result<()>;

    #[zbus(name = "SetLinkDNSOverTLS")]
    fn set_link_dns_over_tls(&self, ifindex: i32, mode: &str) -> zbus::Result<()>;
}
