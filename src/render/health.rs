//! `[X-Kapell-Health]`: a service's health check, carried inside its unit file.
//!
//! The unit is self-contained, as for the container section: whoever probes the service (the
//! supervisor of a container service, `kapell probe` in a native service's `ExecStartPost=`, the
//! host's prober) reads the check back from the unit systemd runs, so `systemctl cat` shows what is
//! probed and a unit set copied to another host probes the same thing there. systemd ignores
//! `X-` sections. Every value goes through the unit file's one escaper.

use crate::model::{Check, Health, OnUnhealthy, Service, StatusRange};
use crate::quantity::Duration;
use crate::unitfile::escape;
use crate::unitfile::{SectionText, UnitFile};
use crate::unitset::markers::HEALTH_SECTION;
use std::net::IpAddr;

/// The check as the unit carries it; a native service's `cmd` runs as the service's user.
pub(super) fn health_spec(service: &Service) -> Option<HealthSpec> {
    let health = Health::clone(service.health.as_deref()?);
    let user = if service.is_container() { None } else { service.user.clone() };
    Some(HealthSpec { health, on_unhealthy: service.on_unhealthy, user })
}

/// What a prober needs to know about one service's check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub health: Health,
    pub on_unhealthy: OnUnhealthy,
    /// The user a native service's `cmd` check runs as (`user` or `user:group`); `None`: root.
    pub user: Option<String>,
}

impl HealthSpec {
    /// Writes the section's entries (the caller began it). Durations and retries are written
    /// resolved (defaults filled in), so the unit says exactly how the service is probed.
    pub fn write(&self, section: &mut SectionText) {
        let h = &self.health;
        match &h.check {
            Check::Http { port, path, expect } => {
                section.display("Http", port);
                section.word("Path", path);
                section.display("Expect", expect);
            }
            Check::Tcp { port } => {
                section.display("Tcp", port);
            }
            Check::Cmd(cmd) => {
                section.words("Cmd", cmd);
                if let Some(user) = &self.user {
                    section.word("User", user);
                }
            }
        }
        section.display("Interval", h.interval());
        section.display("Timeout", h.timeout());
        section.display("Retries", h.retries());
        section.display("StartPeriod", h.start_period());
        section.line("OnUnhealthy", self.on_unhealthy.as_str());
    }

    /// Reads the section back; `Ok(None)` when the unit has no health check.
    pub fn from_unit(unit: &UnitFile) -> Result<Option<Self>, String> {
        let Some(section) = unit.get_section(HEALTH_SECTION) else { return Ok(None) };
        let words = |key: &str| section.words(key);
        let one = |key: &str| section.word(key);
        let port = |key: &str| -> Result<Option<u16>, String> {
            one(key)?.map(|p| p.parse::<u16>().map_err(|_| format!("{key}={p} is not a port"))).transpose()
        };
        let duration = |key: &str| one(key)?.map(|d| Duration::parse(&d)).transpose();
        let check = match (port("Http")?, port("Tcp")?, words("Cmd")?) {
            (Some(port), None, None) => Check::Http {
                port,
                path: one("Path")?.unwrap_or_else(|| "/".to_string()),
                expect: one("Expect")?.map(|e| StatusRange::parse(&e)).transpose()?.unwrap_or(StatusRange::DEFAULT),
            },
            (None, Some(port), None) => Check::Tcp { port },
            (None, None, Some(cmd)) if !cmd.is_empty() => Check::Cmd(cmd),
            _ => return Err(format!("[{HEALTH_SECTION}] needs exactly one of Http=, Tcp= or Cmd=")),
        };
        let retries = one("Retries")?.map(|r| r.parse::<u32>().map_err(|_| format!("Retries={r} is not a number")));
        Ok(Some(Self {
            health: Health {
                check,
                interval: duration("Interval")?,
                timeout: duration("Timeout")?,
                retries: retries.transpose()?,
                start_period: duration("StartPeriod")?,
            },
            on_unhealthy: match one("OnUnhealthy")?.as_deref() {
                Some("ignore") => OnUnhealthy::Ignore,
                _ => OnUnhealthy::Restart,
            },
            user: one("User")?,
        }))
    }

    /// The probe in words, for log lines and `kapell status`: `http://10.1.2.3:8080/healthz`,
    /// `tcp 127.0.0.1:5432`, `cmd pg_isready`.
    pub fn describe(&self, address: Option<IpAddr>) -> String {
        let host = |a: Option<IpAddr>| match a {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(a) => a.to_string(),
            None => "?".to_string(),
        };
        match &self.health.check {
            Check::Http { port, path, .. } => format!("http://{}:{port}{path}", host(address)),
            Check::Tcp { port } => format!("tcp {}:{port}", host(address)),
            Check::Cmd(cmd) => format!("cmd {}", escape::quote_all(cmd)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back() -> Result<(), String> {
        let checks = [
            Check::Http {
                port: 8080,
                path: "/health?deep=1&x=%20".into(),
                expect: StatusRange { first: 204, last: 204 },
            },
            Check::Tcp { port: 5432 },
            Check::Cmd(vec!["/usr/bin/check".into(), "a b".into(), "100%".into(), "$HOME".into()]),
        ];
        for check in checks {
            let spec = HealthSpec {
                health: Health {
                    check,
                    interval: Some(Duration(500_000)),
                    timeout: Some(Duration(2_000_000)),
                    retries: Some(5),
                    start_period: Some(Duration(0)),
                },
                on_unhealthy: OnUnhealthy::Ignore,
                user: Some("app:app".into()),
            };
            let mut unit = crate::unitfile::UnitText::default();
            spec.write(&mut unit.section(HEALTH_SECTION));
            let text = unit.finish();
            let back = HealthSpec::from_unit(&UnitFile::parse(&text)?)?.ok_or("no section")?;
            let user_kept = matches!(spec.health.check, Check::Cmd(_));
            assert_eq!(back.health, spec.health, "{text}");
            assert_eq!(back.user.is_some(), user_kept, "{text}");
        }
        Ok(())
    }
}
