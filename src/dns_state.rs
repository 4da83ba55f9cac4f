//! What a running `kapell dns` tells the rest of the host, in `/run/kapell/dns.json`: the
//! addresses and port it listens on and the host's servers it forwards to (the supervisor gives
//! a container its network's gateway, then those servers, as DNS servers only while the
//! responder listens there on port 53), whether resolved routes `.kapell` to it, and what each
//! name answers now (`kapell status`, `kapell fleet status`).
//!
//! Below both the responder ([`crate::discovery`]) and the supervisor, so neither depends on the
//! other. Written with temp file + rename, so a reader never sees half a file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

const FILE: &str = "dns.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsState {
    /// The responder's process; a file whose process is gone is stale.
    pub pid: u32,
    pub listening: Vec<IpAddr>,
    /// The port it answers on, on every address (53 in a file that does not say).
    #[serde(default = "dns_port")]
    pub port: u16,
    /// The host's servers it forwards other names to: a container's next servers, which
    /// Docker's embedded DNS asks when the responder does not answer (it is stopped).
    #[serde(default)]
    pub upstreams: Vec<IpAddr>,
    /// `Some(true)`: systemd-resolved sends `.kapell` here; `Some(false)`: this host has no
    /// resolved, so its own processes cannot resolve the names; `None`: not managed.
    pub resolved: Option<bool>,
    /// `<service>.<stack>.kapell` → the hosts (name and ip) it answers with now.
    pub names: BTreeMap<String, Vec<Answer>>,
    /// Where the catalog came from: a received generation's file, or the local stacks.
    pub catalog: String,
}

fn dns_port() -> u16 {
    53
}

impl Default for DnsState {
    fn default() -> Self {
        Self {
            pid: 0,
            listening: Vec::new(),
            port: dns_port(),
            upstreams: Vec::new(),
            resolved: None,
            names: BTreeMap::new(),
            catalog: String::new(),
        }
    }
}

impl DnsState {
    /// The DNS servers to give a container on a network with `gateways`: the gateway the
    /// responder listens on, on port 53 (Docker names a container's DNS servers without a
    /// port), then the host's servers the responder forwards to. Docker's embedded DNS asks
    /// them in turn, the next when one does not answer, so the container resolves every name
    /// but `.kapell` ones while the responder is stopped. Loopback servers are left out: the
    /// embedded DNS asks from the container's namespace. Empty when the responder does not
    /// listen there: the container keeps Docker's own servers.
    pub fn container_servers(&self, gateways: &[IpAddr]) -> Vec<IpAddr> {
        let Some(gateway) = gateways.iter().find(|g| self.listening.contains(g)).filter(|_| self.port == 53) else {
            return Vec::new();
        };
        let mut servers = vec![*gateway];
        for ip in &self.upstreams {
            if !ip.is_loopback() && !servers.contains(ip) {
                servers.push(*ip);
            }
        }
        servers
    }

    /// Where this host's own resolver can send `.kapell` questions, written as dnsmasq and
    /// unbound write it (`127.0.0.153`, or `127.0.0.153#5353` and `127.0.0.153@5353`).
    pub fn loopback_server(&self) -> (String, String) {
        let ip = self.listening.iter().find(|ip| ip.is_loopback()).map_or("127.0.0.153".into(), ToString::to_string);
        match self.port {
            53 => (ip.clone(), ip),
            port => (format!("{ip}#{port}"), format!("{ip}@{port}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub host: String,
    pub ip: IpAddr,
    /// How its health is known: `probe`, `systemd` or `controller`.
    pub source: String,
}

pub fn path() -> PathBuf {
    crate::lock::runtime_dir().join(FILE)
}

/// The state of the responder running now, if one is.
pub fn read() -> Option<DnsState> {
    let text = std::fs::read(path()).ok()?;
    let state: DnsState = serde_json::from_slice(&text).ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(state.pid).ok()?), None).is_ok();
    alive.then_some(state)
}

/// Writes the state, replaced whole (under the runtime directory: a reboot clears it anyway).
pub fn write(state: &DnsState) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::atomic_file::replace(&path(), &text, crate::atomic_file::Durability::Volatile)
}

pub fn remove() {
    let _ = std::fs::remove_file(path());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container is given the responder, then the host's servers (not loopback ones). A
    /// responder on another port than 53 reaches no container (Docker's DNS servers carry no
    /// port): the container keeps Docker's forwarding at once, rather than being given a server
    /// that does not answer. Hints name the port as each resolver writes it.
    #[test]
    fn a_container_gets_the_responder_then_the_hosts_servers_on_port_53_only() {
        let gateway: IpAddr = "172.30.0.1".parse().expect("ip");
        let loopback: IpAddr = "127.0.0.153".parse().expect("ip");
        let upstream: IpAddr = "10.231.0.1".parse().expect("ip");
        let upstreams = vec![upstream, "127.0.0.1".parse().expect("ip")];
        let mut state = DnsState { listening: vec![loopback, gateway], upstreams, ..DnsState::default() };
        let other_network: IpAddr = "172.31.0.1".parse().expect("ip");
        assert_eq!(state.container_servers(&[other_network, gateway]), [gateway, upstream], "no loopback upstream");
        assert!(state.container_servers(&[other_network]).is_empty(), "not listened on");
        assert_eq!(state.loopback_server(), ("127.0.0.153".to_string(), "127.0.0.153".to_string()));
        state.port = 5353;
        assert!(state.container_servers(&[gateway]).is_empty());
        assert_eq!(state.loopback_server(), ("127.0.0.153#5353".to_string(), "127.0.0.153@5353".to_string()));
        // A file from before the port was written: 53.
        let old: DnsState =
            serde_json::from_str(r#"{"pid":1,"listening":[],"resolved":null,"names":{},"catalog":""}"#).expect("json");
        assert_eq!((old.port, old.upstreams), (53, vec![]));
    }
}
