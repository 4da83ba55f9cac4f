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
use std::collections::{BTreeMap, HashMap};

/// How many services a service is warned of sharing a port with, before one line says how many
/// more there are: a thousand services that all publish 9100 are a few thousand lines, not a
/// million.
const NAMED_PER_SERVICE: usize = 3;
/// How many pairs of entries are compared at most. A sane host stays far below (a thousand
/// services on one port are half a million); a file made to clash everywhere stops here, with a
/// warning that says so, instead of holding up the generator at boot.
const MAX_COMPARISONS: usize = 1_000_000;

/// The host ports one entry of a container publishes.
struct Published<'a> {
    stack: &'a Stack,
    service: &'a Service,
    ip: &'a str,
    protocol: &'a str,
    entry: &'a str,
    /// The host ports, `first..=last`: one, the ports of a paired range, or a host range.
    first: u16,
    last: u16,
    /// A host range Docker takes the first free port of, not fixed ports.
    range: bool,
}

/// Warns of every pair of services (of any stacks without a placement) that publish the same
/// fixed host port and protocol on addresses that overlap.
///
/// Entries are compared as intervals, swept in port order: the work grows with the number of
/// entries and of clashes, not with the width of a range (`1-65535:1-65535` is one interval).
pub fn check(stacks: &[Stack], warnings: &mut Vec<Diagnostic>) {
    let mut published: Vec<Published<'_>> = Vec::new();
    for stack in stacks.iter().filter(|s| !s.has_placement()) {
        for service in stack.services() {
            let Kind::Container(c) = &service.kind else { continue };
            if matches!(c.network.as_deref(), Some("host" | "none")) {
                continue; // Docker publishes nothing there (`kapell check` warns of the entries)
            }
            for entry in &c.ports {
                let Ok(m) = crate::ports::parse(entry) else { continue };
                let (Some((first, last)), Some(choices)) = (m.host, m.host_port_choices()) else { continue };
                // More than one choice: a host range for one container port, Docker picks a free one.
                let range = choices > 1;
                published.push(Published { stack, service, ip: m.ip, protocol: m.protocol, entry, first, last, range });
            }
        }
    }
    let published = merged(published);
    // Two entries can clash only on one protocol, and on one address or with one of them on every
    // address: each address's entries are swept together with the every-address ones, so
    // containers bound to addresses of their own are never compared with each other.
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, p) in published.iter().enumerate() {
        groups.entry((p.protocol, p.ip)).or_default().push(i);
    }
    let mut sweep = Sweep { published: &published, clashes: HashMap::new(), comparisons: 0, stopped: None };
    for (&(protocol, ip), entries) in &groups {
        if ip.is_empty() {
            sweep.run(entries.clone(), |_| true);
        } else {
            let every = groups.get(&(protocol, "")).map(Vec::as_slice).unwrap_or_default();
            let both: Vec<usize> = entries.iter().chain(every).copied().collect();
            // The every-address pairs are that group's own sweep.
            sweep.run(both, |p: &Published<'_>| !p.ip.is_empty());
        }
    }
    if let Some(i) = sweep.stopped {
        let p = &published[i];
        let message = format!(
            "so many services publish the same host ports that kapell stopped comparing them here (after \
             {MAX_COMPARISONS} pairs of entries): only one container can bind each port"
        );
        warnings.push(Diagnostic::warning(&p.stack.source, p.service.span.clone(), message));
    }
    let clashes = sweep.clashes;
    // One warning per pair of services and side, in file order, whatever the map's order.
    let place = |p: &Published<'_>| (p.stack.name.clone(), p.service.span.start);
    let mut pairs: Vec<(&Published<'_>, &Published<'_>, u16)> = clashes
        .into_values()
        .map(|(port, j, i)| {
            let (a, b) = (&published[j], &published[i]);
            if place(b) < place(a) { (b, a, port) } else { (a, b, port) }
        })
        .collect();
    pairs.sort_by_key(|(a, b, port)| (place(a), place(b), *port));
    let mut partners: HashMap<*const Service, usize> = HashMap::new();
    let mut crowded: Vec<&Published<'_>> = Vec::new();
    for (a, b, port) in pairs {
        for (this, that) in [(a, b), (b, a)] {
            let count = partners.entry(std::ptr::from_ref(this.service)).or_default();
            *count += 1;
            if *count <= NAMED_PER_SERVICE {
                warnings.push(say(this, that, port));
            } else if *count == NAMED_PER_SERVICE + 1 {
                crowded.push(this);
            }
        }
    }
    for this in crowded {
        let more = partners[&std::ptr::from_ref(this.service)] - NAMED_PER_SERVICE;
        let message = format!(
            "{more} more services publish host ports this one publishes (the first {NAMED_PER_SERVICE} are named \
             above): only one container can bind each port"
        );
        warnings.push(Diagnostic::warning(&this.stack.source, this.service.span.clone(), message));
    }
}

/// A service's entries of one protocol, address and kind, with overlapping ports, as one entry
/// (the first one's text): a thousand copies of `1-65535:1-65535` are one interval. Entries on
/// every address (`0.0.0.0`, `::`) have the address `""`.
fn merged<'a>(mut published: Vec<Published<'a>>) -> Vec<Published<'a>> {
    for p in &mut published {
        if matches!(p.ip, "0.0.0.0" | "::") {
            p.ip = "";
        }
    }
    // In file order (stack, then place in the file), so the entry a message names never depends
    // on where a service sits in memory.
    let key = |p: &Published<'a>| (p.stack.name.as_str(), p.service.span.start, p.protocol, p.ip, p.range);
    published.sort_by(|a, b| key(a).cmp(&key(b)).then(a.first.cmp(&b.first)));
    let mut out: Vec<Published<'a>> = Vec::with_capacity(published.len());
    for p in published {
        match out.last_mut() {
            Some(last) if key(last) == key(&p) && p.first <= last.last => last.last = last.last.max(p.last),
            _ => out.push(p),
        }
    }
    out
}

/// The sweep of entries in port order, recording the first clashing port of each pair of
/// services (with the entries behind it), within [`MAX_COMPARISONS`].
struct Sweep<'p, 'a> {
    published: &'p [Published<'a>],
    clashes: HashMap<(*const Service, *const Service), (u16, usize, usize)>,
    comparisons: usize,
    /// The entry the comparisons stopped at, if they did.
    stopped: Option<usize>,
}

impl Sweep<'_, '_> {
    /// Compares each of `entries` with the earlier ones whose ports reach its first, where
    /// `counts` holds for at least one of the two.
    fn run(&mut self, mut entries: Vec<usize>, counts: impl Fn(&Published<'_>) -> bool) {
        let published = self.published;
        entries.sort_by_key(|&i| (published[i].first, i));
        let mut open: Vec<usize> = Vec::new();
        for i in entries {
            if self.stopped.is_some() {
                return;
            }
            let p = &published[i];
            open.retain(|&j| published[j].last >= p.first);
            self.comparisons += open.len();
            if self.comparisons > MAX_COMPARISONS {
                self.stopped = Some(i);
                return;
            }
            for &j in &open {
                let q = &published[j];
                // Two host ranges each take what is free; one service's own entries do not clash.
                let both_ranges = q.range && p.range;
                let clash = !both_ranges && !std::ptr::eq(q.service, p.service) && (counts(p) || counts(q));
                if clash {
                    // In port order: the overlap starts at this entry's first port.
                    let key = (std::ptr::from_ref(q.service), std::ptr::from_ref(p.service));
                    let (key, entries) = if key.0 < key.1 { (key, (j, i)) } else { ((key.1, key.0), (i, j)) };
                    let slot = self.clashes.entry(key).or_insert((p.first, entries.0, entries.1));
                    if p.first < slot.0 {
                        *slot = (p.first, entries.0, entries.1);
                    }
                }
            }
            open.push(i);
        }
    }
}

/// The warning on `this` of the port it shares with `that`.
fn say(this: &Published<'_>, that: &Published<'_>, port: u16) -> Diagnostic {
    let protocol = this.protocol;
    let (other, entry) = (format!("{}.{}", that.stack.name, that.service.name), that.entry);
    let message = if this.range {
        format!(
            "the host range `{}` holds port {port}/{protocol}, which `{other}` publishes (`{entry}`): Docker takes \
             the first free port of a range, so if this container starts first it takes {port}, and `{other}` \
             cannot bind it",
            this.entry
        )
    } else if that.range {
        format!(
            "host port {port}/{protocol} (`{}`) is in the host range of `{other}` (`{entry}`), from which Docker \
             takes the first free port: if `{other}` starts first it takes {port}, and this container cannot bind it",
            this.entry
        )
    } else {
        format!(
            "host port {port}/{protocol} (`{}`) is also published by `{other}` (`{entry}`): only one of the two \
             containers can bind it, so the other fails to start",
            this.entry
        )
    };
    Diagnostic::warning(&this.stack.source, this.service.span.clone(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::path::Path;

    /// The warnings of stacks `(name, text)`.
    fn warnings_of(stacks: &[(&str, String)]) -> Vec<String> {
        let stacks: Vec<Stack> = stacks
            .iter()
            .map(|(name, text)| {
                let parsed = crate::config::parse_stack(Path::new(&format!("{name}.toml")), text);
                parsed.stack.unwrap_or_else(|| panic!("{:?}", parsed.diagnostics))
            })
            .collect();
        let mut warnings = Vec::new();
        check(&stacks, &mut warnings);
        warnings.iter().map(ToString::to_string).collect()
    }

    /// `count` services publishing `ports`.
    fn services(count: usize, ports: &str) -> String {
        let mut text = String::new();
        for i in 0..count {
            let _ = write!(text, "[services.s{i}]\nimage = \"x:1\"\nports = {ports}\n\n");
        }
        text
    }

    /// Paired ranges of every port are one interval each, not 65,535 ports: a 1,000-entry file
    /// of them is checked in a moment, and the two services are warned of once each.
    #[test]
    fn the_widest_ranges_cost_no_more_than_one_port() {
        let entry = "\"1-65535:1-65535\"";
        let ports = format!("[{}]", vec![entry; 1_000].join(", "));
        let warnings = warnings_of(&[("wide", services(2, &ports))]);
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings[0].contains("host port 1/tcp"), "{warnings:#?}");
    }

    /// Twenty services on one port: each is told of three, and how many more there are.
    #[test]
    fn a_crowded_port_names_three_services_and_counts_the_rest() {
        let warnings = warnings_of(&[("crowd", services(20, "[\"9100:9100\"]"))]);
        assert_eq!(warnings.len(), 20 * 4, "{warnings:#?}");
        assert_eq!(warnings.iter().filter(|w| w.contains("16 more services publish host ports")).count(), 20);
    }

    /// A file made to clash everywhere stops the comparison, and says so.
    #[test]
    fn a_port_everyone_publishes_stops_the_comparison() {
        let warnings = warnings_of(&[("all", services(1_500, "[\"9100:9100\"]"))]);
        assert_eq!(warnings.iter().filter(|w| w.contains("kapell stopped comparing them here")).count(), 1);
        assert!(warnings.len() < 1_500 * 5, "{}", warnings.len());
    }

    /// Containers bound to addresses of their own share a port without clashing, and are not
    /// compared with each other: a thousand of them on port 80 are neither warned of nor cut short.
    #[test]
    fn ports_on_addresses_of_their_own_do_not_clash() {
        let mut text = String::new();
        for i in 0..1_000 {
            let _ = write!(
                text,
                "[services.s{i}]\nimage = \"x:1\"\nports = [\"10.0.{}.{}:80:80\"]\n\n",
                i / 250,
                i % 250 + 1
            );
        }
        text.push_str("[services.all]\nimage = \"x:1\"\nports = [\"8080:80\"]\n");
        assert_eq!(warnings_of(&[("own", text)]), Vec::<String>::new());
    }
}
