//! Any bytes as the request `kapell receive` reads on a peer (what a controller, or anyone who
//! can log in over SSH as the fleet's user, sends): it is refused with a reason, or read; a set
//! it carries has its hashes checked without a panic; and a set whose names pass the peer's
//! check (`set_check::check_names`) can only write where the peer expects: unit files named as
//! systemd names units, and `<unit>.wants/<unit>` or `<unit>.requires/<unit>` links to
//! `../<unit>` of the same set. Nothing may panic, overflow the stack or run away.
#![no_main]

use kapell::fleet::peer::request;
use kapell::fleet::peer::set_check::check_names;
use kapell::fleet::protocol::{Body, SetFile};
use libfuzzer_sys::fuzz_target;

/// A name that stays in the directory it is joined to: no separator, not `.` or `..`, no NUL.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fuzz_target!(|data: &[u8]| {
    let Ok(read) = request::parse(data) else { return };
    let Body::Install { set, .. } = &read.body else { return };
    let _ = set.verify();
    if check_names(set).is_err() {
        return;
    }
    for (path, file) in set.files.iter() {
        match file {
            SetFile::Unit { .. } => assert!(plain_name(path), "unit file {path:?} accepted"),
            SetFile::Link { target } => {
                let (dir, name) = path.split_once('/').unwrap_or_else(|| panic!("link {path:?} accepted"));
                assert!(plain_name(dir) && plain_name(name), "link {path:?} accepted");
                assert!(dir.ends_with(".wants") || dir.ends_with(".requires"), "link {path:?} accepted");
                assert_eq!(target.strip_prefix("../"), Some(name), "link {path:?} -> {target:?} accepted");
                assert!(set.units().any(|u| u == name), "link {path:?} to a unit not in the set accepted");
            }
        }
    }
});
