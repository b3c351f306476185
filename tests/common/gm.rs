//! The independent 国密 peer: tests/fixtures/gm_peer.py on the Python `gmssl` package,
//! which scripts/test.sh installs under target/pydeps.

use std::process::Command;

/// Run the gmssl peer (tests/fixtures/gm_peer.py) with `args`, `stdin` as input.
pub fn gm_peer(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let pydeps = std::env::var("HALLGATE_PYDEPS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/pydeps").into());
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gm_peer.py"
    ))
    .args(args)
    .env("PYTHONPATH", pydeps);
    let out = super::run_with_stdin(cmd, stdin);
    if out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("gmssl") {
        panic!(
            "the gmssl package is missing (bash scripts/test.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}
