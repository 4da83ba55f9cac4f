//! `systemd-analyze verify` over a directory of generated units, without a running systemd.
//!
//! verify loads each unit with its dependencies and checks that executables exist, so it runs
//! with `--root` on a throwaway tree holding the machine's own system units, the generated units
//! in /etc/systemd/system, and an empty executable at every absolute `ExecStart=` path (the
//! programs a stack names are not installed on the test machine).

use kapell::unitfile::UnitFile;
use kapell::unitfile::escape::unquote;
use std::path::Path;
use std::process::Command;

pub fn verify_unit_dir(units: &Path) -> Result<(), String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let r = root.path();
    std::fs::create_dir_all(r.join("lib/systemd")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(r.join("etc/systemd")).map_err(|e| e.to_string())?;
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp").arg("-a").arg(from).arg(to).status().map_err(|e| e.to_string())?;
        if status.success() { Ok(()) } else { Err(format!("cp {} failed", from.display())) }
    };
    copy(Path::new("/lib/systemd/system"), &r.join("lib/systemd/system"))?;
    copy(units, &r.join("etc/systemd/system"))?;
    // The units kapell ships (kapell-prober.service, wanted by native services with a check).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    for entry in std::fs::read_dir(&shipped).map_err(|e| e.to_string())? {
        copy(&entry.map_err(|e| e.to_string())?.path(), &r.join("lib/systemd/system"))?;
    }
    std::fs::create_dir_all(r.join("usr/bin")).map_err(|e| e.to_string())?;
    std::fs::write(r.join("usr/bin/kapell"), "#!/bin/sh\n").map_err(|e| e.to_string())?;
    let status = Command::new("chmod").arg("+x").arg(r.join("usr/bin/kapell")).status().map_err(|e| e.to_string())?;
    assert!(status.success());

    let mut names = Vec::new();
    for entry in std::fs::read_dir(units).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path.is_file() || path.is_symlink() {
            continue;
        }
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let unit = UnitFile::parse(&text).map_err(|e| format!("{name}: {e}"))?;
        let service = unit.get_section("Service");
        let execs = service.into_iter().flat_map(|s| s.get_all("ExecStart").chain(s.get_all("ExecStartPost")));
        for exec in execs {
            // Specifiers (`%i`) may follow; only the program, the first word, matters here.
            let line = exec.trim_start_matches([':', '-', '@', '+', '!']).replace("%i", "1");
            let words = unquote(&line).map_err(|e| format!("{name}: {e}"))?;
            if let Some(program) = words.first().filter(|p| p.starts_with('/')) {
                let stub = r.join(program.trim_start_matches('/'));
                std::fs::create_dir_all(stub.parent().expect("parent")).map_err(|e| e.to_string())?;
                std::fs::write(&stub, "#!/bin/sh\n").map_err(|e| e.to_string())?;
                let status = Command::new("chmod").arg("+x").arg(&stub).status().map_err(|e| e.to_string())?;
                assert!(status.success());
            }
        }
        // A template is verified through its first instance.
        names.push(name.replace("@.", "@1."));
    }
    names.sort();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args(&names)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.trim().is_empty() {
        return Err(format!("systemd-analyze verify {} failed ({}):\n{stderr}", names.join(" "), output.status));
    }
    Ok(())
}
