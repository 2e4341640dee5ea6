//! The operators' tools the deploy/ checks run (promtool, systemd-analyze, kubernetes-validate,
//! prometheus): where they are, and running one to completion. scripts/test installs them; a
//! test fails, never skips, when one is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `path` inside the repository.
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A port nobody listens on now (the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `command` to its end; fails the test, naming the tool, when it cannot be started.
pub fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}): scripts/test installs it"))
}

/// stdout and stderr of `output`, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `SSEHUB_*` variables `ssehub serve` reads (from its `--help`), to check that deploy
/// files only set real settings.
pub fn serve_env_names() -> Vec<String> {
    let output = run(super::binary::ssehub_command().args(["serve", "--help"]));
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next().map(str::to_owned))
        .collect()
}
