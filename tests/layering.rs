//! The library's modules depend on each other one way only (issue 8): no cycle between any two
//! modules at any depth (top-level modules of `src/`, and the submodules of each folder among
//! themselves), and the pipeline's lower layers (`names`, `quantity`, `unitfile`, `model`,
//! `unitset`, `config`, `validate`, `render`) never reach up into the commands that use them.
//! Read from the source: every `crate::…` and `super::…` path outside comments.
//!
//! A reference from module A to module B is an edge between the two siblings that contain them
//! under their closest common parent (`import::container` naming `import::map::Svc` is the edge
//! container → map; `fleet::ssh` naming `crate::config::X` is the edge fleet → config). A module
//! naming its own parent or child is no edge: a parent declares and re-exports its children.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of `src/` (lib and main excluded) with its file.
fn modules() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            let stem = path.file_stem().expect("stem").to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(stem);
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if stem != "mod" {
                    module.push(stem);
                }
                if module.is_empty() || module == ["lib"] || module == ["main"] {
                    continue;
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    out
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The paths a line of code names from `module`: `crate::a::b`, `super::x`, and the items of
/// `{…}` groups, each as segments from the crate root.
fn paths(module: &[String], code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(['c', 's']) {
        let rest = &code[i..];
        if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let (mut base, mut rest) = if let Some(r) = rest.strip_prefix("crate::") {
            (Vec::new(), r)
        } else if rest.starts_with("super::") {
            let mut base = module.to_vec();
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                base.pop();
                r = next;
            }
            (base, r)
        } else {
            continue;
        };
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                let inside = group.split('}').next().unwrap_or_default();
                for item in inside.split(',') {
                    let mut path = base.clone();
                    path.extend(item.trim().split("::").map(|s| ident(s.trim()).to_string()).filter(|s| !s.is_empty()));
                    out.push(path);
                }
                break;
            }
            let segment = ident(rest);
            if segment.is_empty() {
                out.push(base);
                break;
            }
            base.push(segment.to_string());
            rest = &rest[segment.len()..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => {
                    out.push(base);
                    break;
                }
            }
        }
    }
    out
}

/// Module → the modules it depends on, as sibling edges under their common parent.
fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules();
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &modules {
        out.entry(module.clone()).or_default();
        let text = std::fs::read_to_string(file).expect("read");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for path in paths(module, code) {
                // The longest prefix of the path that is a module.
                let Some(target) = (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p))
                else {
                    continue;
                };
                let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common == module.len() || common == target.len() {
                    continue; // its own parent or child, or itself
                }
                out.entry(module[..=common].to_vec()).or_default().insert(target[..=common].to_vec());
            }
        }
    }
    out
}

/// Every module reachable from `from`.
fn reachable(edges: &BTreeMap<Module, BTreeSet<Module>>, from: &Module) -> BTreeSet<Module> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.clone()];
    while let Some(m) = todo.pop() {
        for next in edges.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

fn name(module: &Module) -> String {
    module.join("::")
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let edges = edges();
    let top = edges.keys().filter(|m| m.len() == 1).count();
    assert!(top > 10, "read the modules of src/: {:?}", edges.keys());
    assert!(edges.keys().any(|m| m.len() > 1), "read the submodules of src/");
    let cycles: Vec<String> = edges
        .keys()
        .filter(|m| reachable(&edges, m).contains(*m))
        .map(|m| format!("{} -> {:?}", name(m), edges[m].iter().map(name).collect::<Vec<_>>()))
        .collect();
    assert!(cycles.is_empty(), "modules in a dependency cycle:\n{}", cycles.join("\n"));

    let commands = ["cli", "apply", "status", "supervisor", "generator", "systemd"];
    for layer in ["names", "quantity", "unitfile", "model", "unitset", "config", "validate", "render", "host"] {
        let up: Vec<String> = reachable(&edges, &vec![layer.to_string()])
            .into_iter()
            .filter(|m| commands.contains(&m[0].as_str()))
            .map(|m| name(&m))
            .collect();
        assert!(up.is_empty(), "{layer} reaches up into {up:?}");
    }
}

/// The fleet's two sides share only the wire format (`fleet/protocol.rs`) and the layers below
/// the fleet: the controller never names the peer's code, nor the peer the controller's.
#[test]
fn fleet_controller_and_peer_share_only_the_protocol() {
    let under = |m: &Module, side: &str| m.len() >= 2 && m[0] == "fleet" && m[1] == side;
    let edges = edges();
    for side in ["controller", "peer"] {
        assert!(edges.keys().any(|m| under(m, side)), "no modules under src/fleet/{side}");
    }
    for (from, to) in &edges {
        for (side, other) in [("controller", "peer"), ("peer", "controller")] {
            if under(from, side)
                && let Some(target) = to.iter().find(|t| under(t, other))
            {
                panic!("the {side} uses the {other}: {} names {}", name(from), name(target));
            }
        }
    }
}

#[test]
fn paths_are_read_from_crate_and_super() {
    let module = vec!["import".to_string(), "container".to_string()];
    let got = paths(&module, "use super::map::{Context, Svc}; use crate::config::syntax; x.supercrate::no");
    let want: Vec<Vec<&str>> =
        vec![vec!["import", "map", "Context"], vec!["import", "map", "Svc"], vec!["config", "syntax"]];
    assert_eq!(got, want);
    assert_eq!(
        paths(&module, "use super::{Note, map::lost};"),
        [vec!["import", "Note"], vec!["import", "map", "lost"]]
    );
}
