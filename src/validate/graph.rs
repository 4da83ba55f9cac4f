//! Dependency cycles across all stacks of a host, printed in full (`todo: web -> api -> web`).
//! An edge is a dependency (`requires`, `wants`: both order the service after it) or an ordering
//! of kapell's own units in the `[services.*.systemd]` pass-through (`Unit.After=`, and
//! `Unit.Before=`, an edge of the unit it names): systemd would break such a cycle at boot by
//! dropping a job, or refuse the start. A stack's target is a node as well: it is ordered after
//! every service of its stack, so a service of it ordered after the target closes a cycle.
//!
//! A depth-first walk spells out the cycles it closes, the first [`MAX_SPELLED`] of them. Then
//! the strongly connected components make sure every file with an entry on a cycle has an
//! error, also one the walk's cycles did not pass through (a cycle closed through a service
//! already walked, or one past the limit): a file made of a long chain whose every service
//! also wants its first costs one line per stack, not text that grows with the square of it.

use crate::diagnostics::Diagnostic;
use crate::model::{DepTarget, PassThrough, Stack};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// How many cycles are spelled out in full.
const MAX_SPELLED: usize = 32;

/// A service as a graph node: (stack index, service index). A stack's target is a node too, one
/// past its last service (`services().len()`): it wants, and so is ordered after, every service
/// of the stack, and a unit may be ordered after it. One node, not an edge from each unit ordered
/// after it to each service, keeps the graph as large as the files that make it.
type Node = (usize, usize);

/// A dependency edge: where it leads, and the entry that makes it: its span in the file of stack
/// `.0` (not the edge's own stack for a `Before=` of another stack's service), or none for a
/// target's ordering after its services.
#[derive(Clone)]
struct Edge {
    to: Node,
    entry: Option<(usize, Range<usize>)>,
    /// `Some`: a pass-through ordering (`After`, `Before`) of service `.1` makes it.
    ordering: Option<(&'static str, Node)>,
}

impl Edge {
    /// Where the error about a cycle through `edges` goes in each file with an entry of it: its
    /// first pass-through ordering there (the surprise of the cycle), else its first entry there.
    fn blamed<'a>(edges: impl Iterator<Item = &'a Edge> + Clone) -> Vec<(usize, Range<usize>)> {
        let mut blamed: Vec<(usize, Range<usize>)> = Vec::new();
        for edge in edges.clone().filter(|e| e.ordering.is_some()).chain(edges) {
            if let Some((file, span)) = &edge.entry
                && !blamed.iter().any(|(f, _)| f == file)
            {
                blamed.push((*file, span.clone()));
            }
        }
        blamed
    }
}

/// What a cycle's text says of its first pass-through ordering, if it has one.
fn through<'a>(stacks: &[Stack], mut edges: impl Iterator<Item = &'a Edge>) -> String {
    let Some((key, service)) = edges.find_map(|e| e.ordering) else { return String::new() };
    format!(" (through the `{key}=` of {})", node_name(stacks, service, true))
}

/// Whether systemd orders the stack's target (named `target`) after `service`, which it wants: a
/// target adds `After=` to each unit it wants, except one without default dependencies, and one
/// ordered after the target already (that would be a loop; systemd leaves it out).
fn target_orders_after(service: &crate::model::Service, target: &str) -> bool {
    let unit = service.systemd.iter().filter(|p| p.section == "Unit");
    let no_defaults = unit
        .clone()
        .rfind(|p| p.key == "DefaultDependencies")
        .is_some_and(|p| matches!(p.value.to_ascii_lowercase().as_str(), "no" | "false" | "0" | "off" | "n" | "f"));
    let after_it = unit.filter(|p| p.key == "After").any(|p| p.value.split_whitespace().any(|u| u == target))
        || service
            .requires
            .iter()
            .chain(&service.wants)
            .any(|d| matches!(&d.target, DepTarget::Unit(u) if u == target));
    !no_defaults && !after_it
}

/// A node's name in a cycle's text: the service (with its stack: `qualified`), or the target.
fn node_name(stacks: &[Stack], (si, vi): Node, qualified: bool) -> String {
    match stacks[si].services().get(vi) {
        Some(service) if qualified => crate::names::qualified(&stacks[si].name, &service.name),
        Some(service) => service.name.to_string(),
        None => stacks[si].target_unit(),
    }
}

/// One step of the depth-first walk: a node, its edges and the next edge to follow.
type Step = (Node, Vec<Edge>, usize);

pub fn check_cycles(stacks: &[Stack], errors: &mut Vec<Diagnostic>) {
    // Stacks are indexed by name, services looked up within their stack (a handful each): one
    // short hash per edge instead of hashing (stack, service) pairs.
    let stack_index: HashMap<&str, usize> = stacks.iter().enumerate().map(|(si, st)| (st.name.as_str(), si)).collect();
    let service_in = |si: usize, name: &str| stacks[si].service_index(name);
    let node_of = |stack: &str, service: &str| -> Option<Node> {
        // Names are unique on a host, but `kapell check` may be given two files of one name:
        // then the later stack of that name wins, as it did in a (stack, service) map built in
        // order. `stacks` is sorted by name, so those stacks are adjacent.
        let last = *stack_index.get(stack)?;
        (0..=last).rev().take_while(|&si| stacks[si].name == stack).find_map(|si| Some((si, service_in(si, service)?)))
    };
    // A stack whose name no other has (every stack on a host): a local dependency is a service
    // of the same stack, found without looking the stack up again, and every service is a node.
    let sole = |si: usize| {
        let name = &stacks[si].name;
        (si == 0 || stacks[si - 1].name != *name) && stacks.get(si + 1).is_none_or(|next| next.name != *name)
    };
    let sole: Vec<bool> = (0..stacks.len()).map(sole).collect();
    // A dependency may name one of kapell's own units by its unit name (`shop-db.service`,
    // `shop-web@2.service`): that is an edge as well. The name is split at each '-' into a stack
    // and a service looked up as above, so nothing is built per service for it.
    // A stack's target (`shop.target`) is its node past the last service (the later stack of
    // the name, whose services win).
    let node_of_unit = |unit: &str| -> Option<Node> {
        if let Some(stack) = unit.strip_suffix(".target") {
            return stack_index.get(stack).map(|&si| (si, stacks[si].services().len()));
        }
        let base = unit.strip_suffix(".service")?;
        let base = base.split_once('@').map_or(base, |(template, _)| template);
        base.match_indices('-').find_map(|(i, _)| node_of(&base[..i], &base[i + 1..]))
    };
    // A service shadowed by a later stack of the same name is no node of the graph.
    let is_node =
        |(si, vi): Node| sole[si] || node_of(&stacks[si].name, &stacks[si].services()[vi].name) == Some((si, vi));
    // The units of kapell's own that a pass-through ordering of `from` names (systemd ignores a
    // unit ordered against itself).
    let ordered = |p: &'_ PassThrough, from: Node| -> Vec<Node> {
        p.value.split_whitespace().filter_map(node_of_unit).filter(|to| *to != from).collect()
    };
    // `Before=` orders the unit it names after this service: an edge of that unit's service,
    // gathered once (most stacks have none).
    let mut before: HashMap<Node, Vec<Edge>> = HashMap::new();
    for (si, stack) in stacks.iter().enumerate() {
        for (vi, service) in stack.services().iter().enumerate() {
            for p in service.systemd.iter().filter(|p| p.section == "Unit" && p.key == "Before") {
                if !is_node((si, vi)) {
                    break;
                }
                for from in ordered(p, (si, vi)) {
                    let ordering = Some(("Before", (si, vi)));
                    let entry = Some((si, p.span.clone()));
                    before.entry(from).or_default().push(Edge { to: (si, vi), entry, ordering });
                }
            }
        }
    }
    // Edges carry the span of the entry that makes them.
    let edges = |(si, vi): Node| -> Vec<Edge> {
        let Some(service) = stacks[si].services().get(vi) else {
            // A target: after every service of its stack (of each namesake, as they run) that
            // systemd orders it after, and after the services whose `Before=` names it.
            let name = &stacks[si].name;
            let target = stacks[si].target_unit();
            let services = (0..=si)
                .rev()
                .take_while(|&s| stacks[s].name == *name)
                .flat_map(|s| (0..stacks[s].services().len()).map(move |v| (s, v)))
                .filter(|&(s, v)| is_node((s, v)) && target_orders_after(&stacks[s].services()[v], &target))
                .map(|to| Edge { to, entry: None, ordering: None });
            return services.chain(before.get(&(si, vi)).into_iter().flatten().cloned()).collect();
        };
        let dependencies = service.requires.iter().chain(&service.wants).filter_map(|dep| {
            let to = match &dep.target {
                DepTarget::Local(s) if sole[si] => (si, service_in(si, s)?),
                DepTarget::Local(s) => node_of(&stacks[si].name, s)?,
                DepTarget::Remote { stack, service } => node_of(stack, service)?,
                // One instance of a template wanting another is no cycle.
                DepTarget::Unit(unit) => {
                    let to = node_of_unit(unit)?;
                    if to == (si, vi) && unit.contains('@') {
                        return None;
                    }
                    to
                }
            };
            Some(Edge { to, entry: Some((si, dep.span.clone())), ordering: None })
        });
        let after = service.systemd.iter().filter(|p| p.section == "Unit" && p.key == "After").flat_map(|p| {
            let ordering = Some(("After", (si, vi)));
            ordered(p, (si, vi)).into_iter().map(move |to| Edge { to, entry: Some((si, p.span.clone())), ordering })
        });
        let mut edges: Vec<Edge> = dependencies.chain(after).collect();
        if let Some(more) = before.get(&(si, vi)) {
            edges.extend(more.iter().cloned());
        }
        edges
    };

    // Iterative DFS with colours; a grey target closes a cycle. Each cycle is reported once,
    // at the dependency entry that closes it, in every stack it passes through.
    let mut colour = Colours::new(stacks);
    let (mut spelled, mut closed) = (0, false);
    let mut erring: HashSet<usize> = HashSet::new();
    for (si, stack) in stacks.iter().enumerate() {
        for vi in 0..stack.services().len() {
            let start = (si, vi);
            if colour.get(start) != UNSEEN || !is_node(start) {
                continue;
            }
            let mut path: Vec<Step> = vec![(start, edges(start), 0)];
            colour.set(start, ON_PATH);
            while let Some((node, out, next)) = path.last_mut() {
                let node = *node;
                if *next == out.len() {
                    colour.set(node, DONE);
                    path.pop();
                    continue;
                }
                let edge = out[*next].clone();
                let to = edge.to;
                *next += 1;
                match colour.get(to) {
                    UNSEEN => {
                        colour.set(to, ON_PATH);
                        let out = edges(to);
                        path.push((to, out, 0));
                    }
                    ON_PATH if spelled < MAX_SPELLED => {
                        spelled += 1;
                        report(stacks, &path, &edge, errors, &mut erring);
                    }
                    ON_PATH => closed = true,
                    _ => {}
                }
            }
        }
    }
    // A walk that closed no cycle proves there is none (the usual case, which costs nothing more).
    if spelled == 0 && !closed {
        return;
    }
    for component in cyclic_components(stacks, &is_node, &edges) {
        report_component(stacks, &component, &edges, errors, &mut erring);
    }
}

/// The strongly connected components with a cycle in them (more than one service, or one that
/// depends on itself), by Tarjan's algorithm, walked without recursion.
fn cyclic_components(
    stacks: &[Stack],
    is_node: &dyn Fn(Node) -> bool,
    edges: &dyn Fn(Node) -> Vec<Edge>,
) -> Vec<Vec<Node>> {
    const NONE: usize = usize::MAX;
    let slots = Colours::new(stacks);
    let slot = |(si, vi): Node| slots.offsets[si] + vi;
    let total = slots.colours.len();
    let (mut index, mut low, mut on_stack) = (vec![NONE; total], vec![0; total], vec![false; total]);
    let (mut next_index, mut stack, mut found) = (0, Vec::<Node>::new(), Vec::new());
    for (si, st) in stacks.iter().enumerate() {
        for vi in 0..st.services().len() {
            if index[slot((si, vi))] != NONE || !is_node((si, vi)) {
                continue;
            }
            let mut walk: Vec<Step> = vec![((si, vi), edges((si, vi)), 0)];
            let start = slot((si, vi));
            (index[start], low[start], on_stack[start]) = (next_index, next_index, true);
            next_index += 1;
            stack.push((si, vi));
            while let Some((node, out, next)) = walk.last_mut() {
                let (node, n) = (*node, slot(*node));
                if let Some(edge) = out.get(*next) {
                    let (to, t) = (edge.to, slot(edge.to));
                    *next += 1;
                    if index[t] == NONE {
                        (index[t], low[t], on_stack[t]) = (next_index, next_index, true);
                        next_index += 1;
                        stack.push(to);
                        walk.push((to, edges(to), 0));
                    } else if on_stack[t] {
                        low[n] = low[n].min(index[t]);
                    }
                    continue;
                }
                let self_loop = out.iter().any(|edge| edge.to == node);
                walk.pop();
                if let Some((parent, _, _)) = walk.last() {
                    let p = slot(*parent);
                    low[p] = low[p].min(low[n]);
                }
                if low[n] == index[n] {
                    let mut component = Vec::new();
                    while let Some(member) = stack.pop() {
                        on_stack[slot(member)] = false;
                        component.push(member);
                        if member == node {
                            break;
                        }
                    }
                    if component.len() > 1 || self_loop {
                        component.sort_unstable();
                        found.push(component);
                    }
                }
            }
        }
    }
    found
}

/// One error for each stack with an entry that stays in `component` and no error yet, at its first
/// such entry, naming a few of the component's services.
fn report_component(
    stacks: &[Stack],
    component: &[Node],
    edges: &dyn Fn(Node) -> Vec<Edge>,
    errors: &mut Vec<Diagnostic>,
    erring: &mut HashSet<usize>,
) {
    const NAMED: usize = 4;
    let members: HashSet<Node> = component.iter().copied().collect();
    let mut named: Vec<String> = component.iter().take(NAMED).map(|&n| node_name(stacks, n, true)).collect();
    if component.len() > NAMED {
        named.push(format!("… ({} services in all)", component.len()));
    }
    let inside: Vec<Edge> =
        component.iter().flat_map(|&node| edges(node)).filter(|e| members.contains(&e.to)).collect();
    let text = format!(
        "dependency cycle: these services depend on each other in a circle: {}{}",
        named.join(", "),
        through(stacks, inside.iter())
    );
    for (file, span) in Edge::blamed(inside.iter()) {
        if erring.insert(file) {
            errors.push(Diagnostic::new(&stacks[file].source, span, text.clone()));
        }
    }
}

const UNSEEN: u8 = 0;
const ON_PATH: u8 = 1;
const DONE: u8 = 2;

/// The DFS colour of every service, in one flat array (a node is a pair of indices, so no hashing).
struct Colours {
    /// Where each stack's services start in `colours`.
    offsets: Vec<usize>,
    colours: Vec<u8>,
}

impl Colours {
    fn new(stacks: &[Stack]) -> Self {
        let mut offsets = Vec::with_capacity(stacks.len());
        let mut total = 0;
        for stack in stacks {
            offsets.push(total);
            // The stack's services, then its target.
            total += stack.services().len() + 1;
        }
        Self { offsets, colours: vec![UNSEEN; total] }
    }

    fn get(&self, (si, vi): Node) -> u8 {
        self.colours[self.offsets[si] + vi]
    }

    fn set(&mut self, (si, vi): Node, colour: u8) {
        self.colours[self.offsets[si] + vi] = colour;
    }
}

fn report(stacks: &[Stack], path: &[Step], closing: &Edge, errors: &mut Vec<Diagnostic>, erring: &mut HashSet<usize>) {
    let to = closing.to;
    let start = path.iter().position(|(n, _, _)| *n == to).unwrap_or(0);
    let mut cycle: Vec<Node> = path[start..].iter().map(|(n, _, _)| *n).collect();
    cycle.push(to);
    let single_stack = cycle.iter().all(|(s, _)| *s == to.0);
    // A long cycle is shown by its ends: its text stays a line, however long the chain.
    const ENDS: usize = 12;
    let name = |node: &Node| node_name(stacks, *node, !single_stack);
    let names: Vec<String> = if cycle.len() > 2 * ENDS + 1 {
        let hidden = format!("… ({} more) …", cycle.len() - 2 * ENDS);
        let (head, tail) = (&cycle[..ENDS], &cycle[cycle.len() - ENDS..]);
        head.iter().map(name).chain(std::iter::once(hidden)).chain(tail.iter().map(name)).collect()
    } else {
        cycle.iter().map(name).collect()
    };
    // The cycle's entries, the one that closes it first, then each node's edge to the next.
    let mut entries: Vec<&Edge> =
        path[start..].iter().filter_map(|(_, out, next)| out.get(next.saturating_sub(1))).collect();
    entries.rotate_right(1);
    let through = through(stacks, entries.iter().copied());
    let text = if single_stack {
        format!("dependency cycle: {}: {}{through}", stacks[to.0].name, names.join(" -> "))
    } else {
        format!("dependency cycle across stacks: {}{through}", names.join(" -> "))
    };
    // One error in each file with an entry of the cycle.
    for (file, span) in Edge::blamed(entries.iter().copied()) {
        errors.push(Diagnostic::new(&stacks[file].source, span, text.clone()));
        erring.insert(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn stack(file: &str, text: &str) -> Stack {
        let parsed = crate::config::parse_stack(Path::new(file), text);
        parsed.stack.unwrap_or_else(|| panic!("{file}: {:?}", parsed.diagnostics.first().map(ToString::to_string)))
    }

    fn cycle_errors(stacks: &[Stack]) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        check_cycles(stacks, &mut errors);
        errors
    }

    fn cycles(stacks: &[Stack]) -> Vec<String> {
        cycle_errors(stacks).iter().map(|e| e.message.clone()).collect()
    }

    /// The files the errors are in.
    fn erring_files(errors: &[Diagnostic]) -> HashSet<String> {
        errors.iter().map(|e| e.to_string().split(':').next().unwrap_or("").to_string()).collect()
    }

    const LOOP: &str = "[services.x]\nexec = [\"/bin/x\"]\nrequires = [\"y\"]\n\n[services.y]\nexec = [\"/bin/y\"]\nrequires = [\"x\"]\n";

    /// A stack with a name of its own takes the short way to its local dependencies; one given
    /// together with a namesake (`kapell check FILE`) still resolves them to the later stack.
    #[test]
    fn a_cycle_is_found_in_a_stack_of_its_own_and_a_namesake_breaks_it() {
        assert_eq!(cycles(&[stack("/etc/kapell/a.toml", LOOP)]), ["dependency cycle: a: x -> y -> x"]);
        // The later `a` shadows `x`: `y` of the earlier one requires the later `x`, which requires nothing.
        let later = stack("/tmp/a.toml", "[services.x]\nexec = [\"/bin/x\"]\n");
        assert_eq!(cycles(&[stack("/etc/kapell/a.toml", LOOP), later]), Vec::<String>::new());
        // A neighbour of another name changes nothing.
        let other = stack("/etc/kapell/b.toml", "[services.x]\nexec = [\"/bin/x\"]\n");
        assert_eq!(cycles(&[stack("/etc/kapell/a.toml", LOOP), other]), ["dependency cycle: a: x -> y -> x"]);
    }

    /// A cycle the walk closes through a service it had finished (d.x -> a.b, with a.b walked
    /// before d.x) still fails every stack on it.
    #[test]
    fn every_stack_on_a_cycle_gets_an_error() {
        let a = "[services.a]\nexec = [\"/bin/a\"]\nrequires = [\"b\"]\nwants = [\"d.x\"]\n\n\
                 [services.b]\nexec = [\"/bin/b\"]\nrequires = [\"c\"]\n\n\
                 [services.c]\nexec = [\"/bin/c\"]\nrequires = [\"a\"]\n";
        let d = "[services.x]\nexec = [\"/bin/x\"]\nrequires = [\"a.b\"]\n";
        let stacks = [stack("/etc/kapell/a.toml", a), stack("/etc/kapell/d.toml", d)];
        let errors = cycle_errors(&stacks);
        let files = erring_files(&errors);
        assert!(files.contains("/etc/kapell/a.toml") && files.contains("/etc/kapell/d.toml"), "{errors:#?}");
    }

    /// A pass-through `After=` or `Before=` of kapell's own units orders as a dependency does:
    /// a cycle through it is an error at that line, in the file that wrote it.
    #[test]
    fn a_pass_through_ordering_closes_a_cycle() {
        let after = "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { After = \"shop-web.service\" }\n\n\
                     [services.web]\nexec = [\"/bin/web\"]\nrequires = [\"db\"]\n";
        let shown: Vec<String> =
            cycle_errors(&[stack("/etc/kapell/shop.toml", after)]).iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(
            shown,
            ["/etc/kapell/shop.toml:5:18: dependency cycle: shop: db -> web -> db (through the `After=` of shop.db)"]
        );

        // Several units in one value, one of another stack: `shop.web` before `ops.gate` (its
        // `Before=`), and `ops.gate` before `shop.web` (the `Before=` of ops.toml).
        let shop = "[services.web]\nexec = [\"/bin/web\"]\n\n[services.web.systemd.Unit]\nBefore = [\"x.target\", \"other.service ops-gate.service\"]\n";
        let ops =
            "[services.gate]\nexec = [\"/bin/gate\"]\n\n[services.gate.systemd]\nUnit.Before = \"shop-web.service\"\n";
        let stacks = [stack("/etc/kapell/ops.toml", ops), stack("/etc/kapell/shop.toml", shop)];
        let errors = cycle_errors(&stacks);
        let files = erring_files(&errors);
        assert!(files.contains("/etc/kapell/ops.toml") && files.contains("/etc/kapell/shop.toml"), "{errors:#?}");
        let at = errors.iter().find(|e| e.to_string().starts_with("/etc/kapell/shop.toml:")).map(ToString::to_string);
        assert!(at.as_deref().is_some_and(|e| e.starts_with("/etc/kapell/shop.toml:5:23: ")), "{at:?}");

        // A stack's target is ordered after each of its services but those ordered after it
        // (systemd leaves that loop out): a service ordered after its own stack's target, or
        // requiring it, closes a cycle through another that orders itself after the first.
        for (text, cycle) in [
            (
                "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { After = \"shop.target\" }\n\n\
                 [services.web]\nexec = [\"/bin/web\"]\nrequires = [\"db\"]\n",
                "dependency cycle: shop: db -> shop.target -> web -> db (through the `After=` of shop.db)",
            ),
            (
                "[services.db]\nexec = [\"/bin/db\"]\nrequires = [\"shop.target\"]\n\n[services.web]\nexec = [\"/bin/web\"]\nwants = [\"db\"]\n",
                "dependency cycle: shop: db -> shop.target -> web -> db",
            ),
        ] {
            assert_eq!(cycles(&[stack("/etc/kapell/shop.toml", text)]), [cycle], "{text}");
        }

        // Orderings that close nothing: the other way round, against itself (systemd ignores
        // that), an instance of its own template, a unit kapell does not own, `Requires=`, before
        // its own target, after another stack's, after its own alone or with a service that
        // orders itself after the target without default dependencies.
        for ok in [
            "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { Before = \"shop-web.service\" }\n\n\
             [services.web]\nexec = [\"/bin/web\"]\nrequires = [\"db\"]\n",
            "[services.web]\nexec = [\"/bin/web\"]\n\n[services.web.systemd]\nUnit = { After = \"shop-web.service\" }\n",
            "[services.web]\nexec = [\"/bin/web\"]\nreplicas = 2\n\n[services.web.systemd]\nUnit = { After = \"shop-web@1.service\" }\n",
            "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { After = \"web.service\", Requires = \"shop-web.service\" }\n\n\
             [services.web]\nexec = [\"/bin/web\"]\nrequires = [\"db\"]\n",
            "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { Before = \"shop.target\", After = \"ops.target\" }\n",
            "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { After = \"shop.target\" }\n",
            "[services.db]\nexec = [\"/bin/db\"]\nrequires = [\"shop.target\"]\n",
            "[services.db]\nexec = [\"/bin/db\"]\n\n[services.db.systemd]\nUnit = { After = \"shop.target\" }\n\n\
             [services.web]\nexec = [\"/bin/web\"]\nrequires = [\"db\"]\n\n[services.web.systemd]\nUnit.DefaultDependencies = false\n",
        ] {
            assert_eq!(cycles(&[stack("/etc/kapell/shop.toml", ok)]), Vec::<String>::new(), "{ok}");
        }
    }

    /// Every service of one stack ordered after another stack's target, which is ordered after
    /// each of that stack's services: the target is one node, so the graph grows with the
    /// files, not with the product of the two stacks (which, here, would be 25 million edges).
    #[test]
    fn many_services_after_a_large_stacks_target_cost_one_edge_each() {
        let n = 5_000;
        let mut big = String::new();
        let mut after = String::new();
        for i in 0..n {
            big.push_str(&format!("[services.s{i}]\nexec = [\"/bin/x\"]\n\n"));
            after.push_str(&format!(
                "[services.a{i}]\nexec = [\"/bin/x\"]\n\n[services.a{i}.systemd]\nUnit.After = \"big.target\"\n\n"
            ));
        }
        let stacks = [stack("/etc/kapell/after.toml", &after), stack("/etc/kapell/big.toml", &big)];
        assert_eq!(cycles(&stacks), Vec::<String>::new());
    }

    /// A chain whose every service also wants the first closes a cycle at every link: the first
    /// few are spelled out, by their ends, and the errors stay a few lines.
    #[test]
    fn a_chain_of_cycles_costs_a_few_lines() {
        let n = 3_000;
        let mut text = String::new();
        for i in 0..n {
            let next = if i + 1 < n { format!("requires = [\"s{}\"]\n", i + 1) } else { String::new() };
            text.push_str(&format!("[services.s{i}]\nexec = [\"/bin/x\"]\n{next}wants = [\"s0\"]\n\n"));
        }
        let errors = cycles(&[stack("/etc/kapell/chain.toml", &text)]);
        assert!(errors.len() <= MAX_SPELLED, "{}", errors.len());
        let size: usize = errors.iter().map(String::len).sum();
        assert!(size < 64 * 1024, "{size} bytes of errors");
        assert!(errors.iter().any(|e| e.contains("more) …")), "{:?}", errors.last());
    }
}
