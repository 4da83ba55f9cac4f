//! The library's modules depend on each other one way only (issue 8): no cycle between any two
//! top-level modules of `src/`, and the pipeline's lower layers (`names`, `quantity`,
//! `unitfile`, `model`, `unitset`, `config`, `validate`, `render`) never reach up into the
//! commands that use them. Read from the source: every `crate::<module>` path outside comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        collect(&path, &mut files);
        let uses = out.entry(name.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or_default();
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + "crate::".len()..];
                    let module: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !module.is_empty() && module != name {
                        uses.insert(module);
                    }
                }
            }
        }
    }
    out
}

fn collect(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("dir") {
            collect(&entry.expect("entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Every module reachable from `from`.
fn reachable(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for next in edges.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let edges = edges();
    assert!(edges.len() > 10, "read the modules of src/: {:?}", edges.keys());
    let cycles: Vec<String> =
        edges.keys().filter(|m| reachable(&edges, m).contains(*m)).map(|m| format!("{m} -> {:?}", edges[m])).collect();
    assert!(cycles.is_empty(), "modules in a dependency cycle:\n{}", cycles.join("\n"));

    let commands = ["cli", "apply", "status", "supervisor", "generator", "systemd"];
    for layer in ["names", "quantity", "unitfile", "model", "unitset", "config", "validate", "render", "host"] {
        let up: Vec<String> = reachable(&edges, layer).into_iter().filter(|m| commands.contains(&m.as_str())).collect();
        assert!(up.is_empty(), "{layer} reaches up into {up:?}");
    }
}

/// The fleet's two sides share only the wire format (`fleet/protocol.rs`) and the layers below
/// the fleet: the controller never names the peer's code, nor the peer the controller's.
#[test]
fn fleet_controller_and_peer_share_only_the_protocol() {
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fleet");
    for (side, other) in [("controller", "peer"), ("peer", "controller")] {
        let mut files = Vec::new();
        collect(&fleet.join(side), &mut files);
        assert!(!files.is_empty(), "no source files in src/fleet/{side}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let names_other =
                    code.contains(&format!("fleet::{other}")) || code.contains(&format!("super::super::{other}"));
                assert!(!names_other, "{}:{}: the {side} uses the {other}: {}", file.display(), n + 1, line.trim());
            }
        }
    }
}
