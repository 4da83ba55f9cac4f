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
    let index: HashMap<(&str, &str), Node> = stacks
        .iter()
        .enumerate()
        .flat_map(|(si, st)| {
            st.services.iter().enumerate().map(move |(vi, sv)| ((st.name.as_str(), sv.name.as_str()), (si, vi)))
        })
        .collect();
    // Edges carry the span of the dependency entry that makes them.
    let edges = |(si, vi): Node| -> Vec<Edge> {
        let stack = &stacks[si];
        let service = &stack.services[vi];
        service
            .requires
            .iter()
            .chain(&service.wants)
            .filter_map(|dep| {
                let key = match &dep.target {
                    DepTarget::Local(s) => (stack.name.as_str(), s.as_str()),
                    DepTarget::Remote { stack, service } => (stack.as_str(), service.as_str()),
                    DepTarget::Unit(_) => return None,
                };
                index.get(&key).map(|n| (*n, dep.span.clone()))
            })
            .collect()
    };

    // Iterative DFS with colours; a grey target closes a cycle. Each cycle is reported once,
    // at the dependency entry that closes it, in every stack it passes through.
    let mut colour: HashMap<Node, u8> = HashMap::new(); // 1 = on the path, 2 = done
    let mut nodes: Vec<Node> = index.values().copied().collect();
    nodes.sort();
    for start in nodes {
        if colour.contains_key(&start) {
            continue;
        }
        let mut path: Vec<Step> = vec![(start, edges(start), 0)];
        colour.insert(start, 1);
        while let Some((node, out, next)) = path.last_mut() {
            let node = *node;
            if *next == out.len() {
                colour.insert(node, 2);
                path.pop();
                continue;
            }
            let (to, span) = out[*next].clone();
            *next += 1;
            match colour.get(&to) {
                None => {
                    colour.insert(to, 1);
                    let out = edges(to);
                    path.push((to, out, 0));
                }
                Some(1) => report(stacks, &path, to, span, errors),
                Some(_) => {}
            }
        }
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
            let service = &stacks[*s].services[*v].name;
            if single_stack { service.clone() } else { format!("{}.{service}", stacks[*s].name) }
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
