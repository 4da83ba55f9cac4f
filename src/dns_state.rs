//! What a running `kapell dns` tells the rest of the host, in `/run/kapell/dns.json`: the
//! addresses it listens on (the supervisor gives a container its network's gateway as DNS server
//! only while the responder listens there), whether resolved routes `.kapell` to it, and what
//! each name answers now (`kapell status`, `kapell fleet status`).
//!
//! Below both the responder ([`crate::discovery`]) and the supervisor, so neither depends on the
//! other. Written with temp file + rename, so a reader never sees half a file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

const FILE: &str = "dns.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsState {
    /// The responder's process; a file whose process is gone is stale.
    pub pid: u32,
    pub listening: Vec<IpAddr>,
    /// The port it answers on, on every address (53 in a file that does not say).
    #[serde(default = "dns_port")]
    pub port: u16,
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

impl DnsState {
    /// The gateway of `gateways` to give a container as its DNS server: one the responder
    /// listens on, on port 53 (Docker names a container's DNS servers without a port).
    pub fn container_server(&self, gateways: &[IpAddr]) -> Option<IpAddr> {
        if self.port != 53 {
            return None;
        }
        gateways.iter().find(|g| self.listening.contains(g)).copied()
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

    /// A responder on another port than 53 reaches no container (Docker's DNS servers carry no
    /// port): the container keeps Docker's forwarding at once, rather than being given a server
    /// that does not answer. Hints name the port as each resolver writes it.
    #[test]
    fn another_port_than_53_is_no_containers_server_and_hints_name_it() {
        let gateway: IpAddr = "172.30.0.1".parse().expect("ip");
        let loopback: IpAddr = "127.0.0.153".parse().expect("ip");
        let mut state = DnsState { listening: vec![loopback, gateway], port: 53, ..DnsState::default() };
        assert_eq!(state.container_server(&["172.31.0.1".parse().expect("ip"), gateway]), Some(gateway));
        assert_eq!(state.container_server(&["172.31.0.1".parse().expect("ip")]), None, "not listened on");
        assert_eq!(state.loopback_server(), ("127.0.0.153".to_string(), "127.0.0.153".to_string()));
        state.port = 5353;
        assert_eq!(state.container_server(&[gateway]), None);
        assert_eq!(state.loopback_server(), ("127.0.0.153#5353".to_string(), "127.0.0.153@5353".to_string()));
        // A file from before the port was written: 53.
        let old: DnsState =
            serde_json::from_str(r#"{"pid":1,"listening":[],"resolved":null,"names":{},"catalog":""}"#).expect("json");
        assert_eq!(old.port, 53);
    }
}
