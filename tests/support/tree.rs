//! A directory's whole content, for comparing what a generator wrote. A module of its own, with
//! no dependency on the rig, so that the tests that need no root (`generator_kill.rs`) can take
//! it without the rest of `support`.

use std::collections::BTreeMap;
use std::path::Path;

/// Every entry under `dir`: path → file bytes, or `-> target` for a link.
pub fn read(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(base).expect("prefix").display().to_string();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).expect("read_link");
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if meta.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
