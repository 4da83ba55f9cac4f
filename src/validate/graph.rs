//! Dependency cycles across all stacks of a host, printed in full (`todo: web -> api -> web`).

use crate::diagnostics::Diagnostic;
use crate::model::{DepTarget, Stack};
use std::collections::HashMap;
use std::ops::Range;

/// A service as a graph node: (stack index, service index).
type Node = (usize, usize);

/// A dependency edge and the span of the entry that makes it.
type Edge = (Node, Range<usize>);

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
    let node_of_unit = |unit: &str| -> Option<Node> {
        let base = unit.strip_suffix(".service")?;
        let base = base.split_once('@').map_or(base, |(template, _)| template);
        base.match_indices('-').find_map(|(i, _)| node_of(&base[..i], &base[i + 1..]))
    };
    // Edges carry the span of the dependency entry that makes them.
    let edges = |(si, vi): Node| -> Vec<Edge> {
        let service = &stacks[si].services()[vi];
        service
            .requires
            .iter()
            .chain(&service.wants)
            .filter_map(|dep| {
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
                Some((to, dep.span.clone()))
            })
            .collect()
    };

    // Iterative DFS with colours; a grey target closes a cycle. Each cycle is reported once,
    // at the dependency entry that closes it, in every stack it passes through.
    let mut colour = Colours::new(stacks);
    for (si, stack) in stacks.iter().enumerate() {
        for (vi, service) in stack.services().iter().enumerate() {
            let start = (si, vi);
            // A service shadowed by a later stack of the same name is no node of the graph.
            if colour.get(start) != UNSEEN || (!sole[si] && node_of(&stack.name, &service.name) != Some(start)) {
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
                let (to, span) = out[*next].clone();
                *next += 1;
                match colour.get(to) {
                    UNSEEN => {
                        colour.set(to, ON_PATH);
                        let out = edges(to);
                        path.push((to, out, 0));
                    }
                    ON_PATH => report(stacks, &path, to, span, errors),
                    _ => {}
                }
            }
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
            total += stack.services().len();
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

fn report(stacks: &[Stack], path: &[Step], to: Node, closing: Range<usize>, errors: &mut Vec<Diagnostic>) {
    let start = path.iter().position(|(n, _, _)| *n == to).unwrap_or(0);
    let mut cycle: Vec<Node> = path[start..].iter().map(|(n, _, _)| *n).collect();
    cycle.push(to);
    let single_stack = cycle.iter().all(|(s, _)| *s == to.0);
    let names: Vec<String> = cycle
        .iter()
        .map(|(s, v)| {
            let service = &stacks[*s].services()[*v].name;
            if single_stack { service.to_string() } else { crate::names::qualified(&stacks[*s].name, service) }
        })
        .collect();
    let text = if single_stack {
        format!("dependency cycle: {}: {}", stacks[to.0].name, names.join(" -> "))
    } else {
        format!("dependency cycle across stacks: {}", names.join(" -> "))
    };
    // The entry that closes the cycle is in the last node's stack; other stacks of the cycle get
    // the error at the entry of theirs that continues it.
    let last = cycle[cycle.len() - 2];
    errors.push(Diagnostic::new(&stacks[last.0].source, closing, text.clone()));
    let mut seen = vec![last.0];
    for (node, out, next) in &path[start..] {
        if seen.contains(&node.0) {
            continue;
        }
        seen.push(node.0);
        if let Some((_, span)) = out.get(next.saturating_sub(1)) {
            errors.push(Diagnostic::new(&stacks[node.0].source, span.clone(), text.clone()));
        }
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

    fn cycles(stacks: &[Stack]) -> Vec<String> {
        let mut errors = Vec::new();
        check_cycles(stacks, &mut errors);
        errors.iter().map(|e| e.message.clone()).collect()
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
}
