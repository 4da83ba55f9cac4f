//! The escaper against the real thing: a stack whose arguments and environment values hold every
//! character that means something in a unit file (quotes, `%`, `$`, backslashes, blanks,
//! newlines, `;`, unicode) is generated at boot by a real systemd; the process it starts writes
//! back the argv and environment it received, which must be exactly what the stack says.

mod support;
mod toml_text;

use anyhow::{Context, Result, ensure};
use support::Host;

/// Every argument a unit file could misread.
const NASTY: &[&str] = &[
    "two words",
    "say \"hi\"",
    "'single'",
    "100%",
    "%n %i %%",
    "$HOME",
    "${PATH}",
    "$$",
    "back\\slash",
    "trailing\\",
    "line\nbreak",
    "tab\there",
    "ünïcødé ✓ 日本語",
    "",
    ";",
    "-dash",
    "a=b",
    "[Service]",
    "# comment",
];

#[test]
fn arguments_and_environment_reach_the_process_exactly() -> Result<()> {
    // `sh -c SCRIPT sh ARGS…`: the script writes each argument NUL-terminated, then the value
    // of every NASTY_n variable the same way.
    let script = "for a; do printf '%s\\0' \"$a\"; done > /var/tmp/argv; \
                  i=0; while [ $i -lt $COUNT ]; do eval \"printf '%s\\0' \\\"\\$NASTY_$i\\\"\"; i=$((i+1)); done > /var/tmp/env";
    let mut exec = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string(), "sh".to_string()];
    exec.extend(NASTY.iter().map(|s| s.to_string()));
    let env: Vec<String> =
        NASTY.iter().enumerate().map(|(i, v)| format!("NASTY_{i} = {}", toml_text::string(v))).collect();
    let stack = format!(
        "[services.echo]\nexec = [{}]\ntype = \"oneshot\"\nenv = {{ COUNT = \"{}\", {} }}\n",
        exec.iter().map(|a| toml_text::string(a)).collect::<Vec<_>>().join(", "),
        NASTY.len(),
        env.join(", ")
    );

    let host = Host::builder()
        .kapell(env!("CARGO_BIN_EXE_kapell"))
        .install_file("/etc/kapell/esc.toml", stack.clone(), 0o644)
        .boot()?;
    // A oneshot with RemainAfterExit: active once it ran and succeeded.
    let state = host.show("esc-echo.service", "ActiveState")?;
    ensure!(state.trim() == "active", "esc-echo is {state:?}\n{}", host.journal("esc-echo.service")?);

    let read = |name: &str| -> Result<Vec<String>> {
        let bytes = std::fs::read(host.root().join("var/tmp").join(name))
            .with_context(|| format!("no /var/tmp/{name}: the service did not run\n{stack}"))?;
        let mut items: Vec<String> =
            bytes.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        items.pop(); // after the last NUL
        Ok(items)
    };
    ensure!(read("argv")? == NASTY, "argv differs:\n got {:?}\nwant {:?}", read("argv")?, NASTY);
    ensure!(read("env")? == NASTY, "environment differs:\n got {:?}\nwant {:?}", read("env")?, NASTY);
    Ok(())
}

/// Paths with blanks, quotes, an apostrophe and `%` (issue 8, defect 6) reach systemd as the stack
/// writes them: the working directory, an environment file and a credential file.
#[test]
fn paths_with_blanks_and_quotes_reach_systemd_exactly() -> Result<()> {
    let dir = "/srv/my app/100% \"q\" it's";
    let env_file = "/etc/kapell/my env 100%.env";
    let secret = "/etc/kapell/secrets/my token";
    let script = "pwd > /var/tmp/pwd; printf '%s' \"$FROM_FILE\" > /var/tmp/from-file; \
                  cat \"$CREDENTIALS_DIRECTORY/token\" > /var/tmp/token";
    let stack = format!(
        "[services.paths]\nexec = [\"/bin/sh\", \"-c\", {}]\ntype = \"oneshot\"\nworking_dir = {}\nenv_files = [{}]\n\
         secrets = [\"token\"]\n\n[secrets.token]\nfile = {}\n",
        toml_text::string(script),
        toml_text::string(dir),
        toml_text::string(env_file),
        toml_text::string(secret)
    );
    let host = Host::builder()
        .kapell(env!("CARGO_BIN_EXE_kapell"))
        .install_file("/etc/kapell/blank.toml", stack.clone(), 0o644)
        .install_file(format!("{dir}/.keep"), "", 0o644)
        .install_file(env_file, "FROM_FILE=from the file\n", 0o600)
        .install_file(secret, "s3cret", 0o600)
        .boot()?;
    let state = host.show("blank-paths.service", "ActiveState")?;
    ensure!(state == "active", "blank-paths is {state:?}\n{stack}\n{}", host.journal("blank-paths.service")?);
    let read = |name: &str| -> Result<String> {
        std::fs::read_to_string(host.root().join("var/tmp").join(name))
            .with_context(|| format!("no /var/tmp/{name}: the service did not run\n{stack}"))
    };
    ensure!(read("pwd")? == format!("{dir}\n"), "working directory {:?}, want {dir:?}", read("pwd")?);
    ensure!(read("from-file")? == "from the file", "environment file not read: {:?}", read("from-file")?);
    ensure!(read("token")? == "s3cret", "credential not loaded: {:?}", read("token")?);
    Ok(())
}
