//! Host ports two containers of one host both publish: only one of them can bind the port, so
//! the other fails to start. Reported as a warning on both services, not an error: the first
//! to start runs, and an error would take both stacks off the host at its next boot.
//!
//! Fixed host ports count (`8080:80`, the ports of paired ranges), against each other and against
//! a host range another container takes a free port from (`8080-8082:80`: Docker picks the first
//! free one, so which container gets 8080 depends on which starts first); two such ranges do not
//! (each takes what is free), nor does `80` (any free port). Stacks with a fleet placement are
//! left out: on a fleet controller they run on other hosts, each on its own ports.

use crate::diagnostics::Diagnostic;
use crate::model::{Kind, Service, Stack};
use std::collections::HashMap;

/// One fixed host port a container publishes.
struct Bound<'a> {
    stack: &'a Stack,
    service: &'a Service,
    ip: &'a str,
    entry: &'a str,
    /// A host range Docker takes the first free port of, not a fixed port.
    range: bool,
}

/// Warns of every pair of services (of any stacks without a placement) that publish the same
/// fixed host port and protocol on addresses that overlap.
pub fn check(stacks: &[Stack], warnings: &mut Vec<Diagnostic>) {
    let mut by_port: HashMap<(u16, &str), Vec<Bound<'_>>> = HashMap::new();
    let mut ranges: Vec<((u16, u16), &str, Bound<'_>)> = Vec::new();
    for stack in stacks.iter().filter(|s| !s.has_placement()) {
        for service in stack.services() {
            let Kind::Container(c) = &service.kind else { continue };
            if matches!(c.network.as_deref(), Some("host" | "none")) {
                continue; // Docker publishes nothing there (`kapell check` warns of the entries)
            }
            for entry in &c.ports {
                let Ok(m) = crate::ports::parse(entry) else { continue };
                let (Some((first, last)), Some(choices)) = (m.host, m.host_port_choices()) else { continue };
                if choices > 1 {
                    // A host range for one container port: Docker picks a free one of it.
                    ranges.push(((first, last), m.protocol, Bound { stack, service, ip: m.ip, entry, range: true }));
                    continue;
                }
                for port in first..=last {
                    let bound = Bound { stack, service, ip: m.ip, entry, range: false };
                    by_port.entry((port, m.protocol)).or_default().push(bound);
                }
            }
        }
    }
    let mut pairs: Vec<(&Bound<'_>, &Bound<'_>, u16, &str)> = Vec::new();
    for ((port, protocol), bound) in &by_port {
        for (i, a) in bound.iter().enumerate() {
            for b in &bound[i + 1..] {
                let same_service = std::ptr::eq(a.service, b.service);
                if !same_service && overlap(a.ip, b.ip) {
                    pairs.push((a, b, *port, protocol));
                }
            }
        }
    }
    for ((first, last), protocol, range) in &ranges {
        for port in *first..=*last {
            for fixed in by_port.get(&(port, *protocol)).into_iter().flatten() {
                if !std::ptr::eq(fixed.service, range.service) && overlap(fixed.ip, range.ip) {
                    pairs.push((fixed, range, port, protocol));
                }
            }
        }
    }
    // One warning per pair of services and side, in file order, whatever the map's order.
    let place = |b: &Bound<'_>| (b.stack.name.clone(), b.service.span.start);
    for pair in &mut pairs {
        if place(pair.1) < place(pair.0) {
            std::mem::swap(&mut pair.0, &mut pair.1);
        }
    }
    pairs.sort_by_key(|(a, b, port, _)| {
        (a.stack.name.clone(), a.service.span.start, b.stack.name.clone(), b.service.span.start, *port)
    });
    pairs.dedup_by(|x, y| std::ptr::eq(x.0.service, y.0.service) && std::ptr::eq(x.1.service, y.1.service));
    for (a, b, port, protocol) in pairs {
        let say = |this: &Bound<'_>, that: &Bound<'_>| {
            let (other, entry) = (format!("{}.{}", that.stack.name, that.service.name), that.entry);
            let message = if this.range {
                format!(
                    "the host range `{}` holds port {port}/{protocol}, which `{other}` publishes (`{entry}`): Docker \
                     takes the first free port of a range, so if this container starts first it takes {port}, and \
                     `{other}` cannot bind it",
                    this.entry
                )
            } else if that.range {
                format!(
                    "host port {port}/{protocol} (`{}`) is in the host range of `{other}` (`{entry}`), from which \
                     Docker takes the first free port: if `{other}` starts first it takes {port}, and this container \
                     cannot bind it",
                    this.entry
                )
            } else {
                format!(
                    "host port {port}/{protocol} (`{}`) is also published by `{other}` (`{entry}`): only one of the \
                     two containers can bind it, so the other fails to start",
                    this.entry
                )
            };
            Diagnostic::warning(&this.stack.source, this.service.span.clone(), message)
        };
        warnings.push(say(a, b));
        warnings.push(say(b, a));
    }
}

/// Whether two host addresses a port is bound on can clash: the same one, or either one is every
/// address (empty, `0.0.0.0`, `::`).
fn overlap(a: &str, b: &str) -> bool {
    let any = |ip: &str| matches!(ip, "" | "0.0.0.0" | "::");
    a == b || any(a) || any(b)
}
