//! Builds the relay component (`component/guest`, a `wasm32-wasip2` cdylib)
//! with a nested cargo and hands its path to the host as `RELAY_GUEST_WASM`.
//!
//! Recipe and pitfalls: /work/shared/notes/wasm-toolchain.md §3. The nested
//! build uses its own target dir under OUT_DIR (sharing the outer one
//! deadlocks on the artifact lock), runs from the guest dir (so its
//! `.cargo/config.toml` applies) and drops the host's flag variables (host
//! RUSTFLAGS break the wasm link; an inherited CARGO_ENCODED_RUSTFLAGS hides
//! the guest's own rustflags). CARGO_MAKEFLAGS is kept so the nested cargo
//! shares the outer jobserver.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const GUEST_WASM: &str = "relay_guest.wasm";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guest_dir = manifest_dir.join("../component/guest");

    for p in [
        "../component/guest/Cargo.toml",
        "../component/guest/Cargo.lock",
        "../component/guest/src",
        "../wit",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    // A missing path would make every build dirty; track it once it exists.
    if guest_dir.join(".cargo").exists() {
        println!("cargo:rerun-if-changed=../component/guest/.cargo");
    }

    let guest_target = out_dir.join("guest-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir)
        .args([
            "build",
            "--release",
            "--target=wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&guest_target)
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::piped());
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }

    let output = cmd
        .output()
        .expect("failed to run cargo for the relay guest (component/guest)");
    // Show the nested build's diagnostics (visible with -vv or on failure).
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if !output.status.success() {
        if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            println!(
                "cargo:warning=the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`"
            );
        }
        panic!(
            "building the relay guest (component/guest) for wasm32-wasip2 failed ({}); \
             see the output above. If the target is missing: rustup target add wasm32-wasip2",
            output.status
        );
    }

    let built = guest_target.join("wasm32-wasip2/release").join(GUEST_WASM);
    track_dep_file(&built.with_extension("d"));

    let wasm = out_dir.join(GUEST_WASM);
    fs::copy(&built, &wasm)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), wasm.display()));
    println!("cargo:rustc-env=RELAY_GUEST_WASM={}", wasm.display());
}

/// Re-run when any input of the guest build changes: its `.d` file lists every
/// source, including path dependencies (`component/core`) and the WIT files.
fn track_dep_file(dep_file: &Path) {
    let Ok(text) = fs::read_to_string(dep_file) else {
        println!(
            "cargo:warning=no dep-info at {}; guest rebuilds are tracked coarsely",
            dep_file.display()
        );
        return;
    };
    // Format: `<output>: <dep> <dep> ...`, spaces inside paths escaped as `\ `.
    let Some((_, deps)) = text.split_once(": ") else {
        return;
    };
    let mut current = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some(' ')) => {
                current.push(' ');
                chars.next();
            }
            ' ' | '\n' | '\r' | '\t' => {
                if !current.is_empty() {
                    println!("cargo:rerun-if-changed={current}");
                    current.clear();
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        println!("cargo:rerun-if-changed={current}");
    }
}
