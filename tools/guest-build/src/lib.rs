//! Builds a guest component for `wasm32-wasip2` from a build script, with a
//! nested cargo, and hands the `.wasm` path to the crate being built as a
//! `rustc-env` variable. Used by `relay-host` (the relay component, behind
//! its `embedded-component` feature) and by `relay-test-artifacts` (the
//! test-only misbehaving component), so each is built only where needed.
//!
//! Recipe and pitfalls (docs/contributing.md): each nested build uses its
//! own target dir under `OUT_DIR` (sharing the outer one deadlocks on the
//! artifact lock), runs from the guest's dir (so its `.cargo/config.toml`
//! applies) and drops the host's flag variables (host RUSTFLAGS break the
//! wasm link; an inherited CARGO_ENCODED_RUSTFLAGS hides the guest's own
//! rustflags). CARGO_MAKEFLAGS is kept so the nested cargo shares the outer
//! jobserver. A build script is allowed to panic: that is how it fails.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One guest crate to build.
#[derive(Debug)]
pub struct Guest {
    /// Directory relative to the calling crate's manifest.
    pub dir: &'static str,
    /// The `.wasm` the build produces (crate name with `_`).
    pub wasm: &'static str,
    /// The `rustc-env` variable that carries the copied `.wasm`'s path.
    pub env: &'static str,
    /// Target dir name under OUT_DIR.
    pub target: &'static str,
}

/// Builds `guest` and sets its `rustc-env` variable; re-runs the calling
/// build script when any of the guest's inputs (or the WIT) change.
pub fn build(guest: &Guest) {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let (manifest_dir, out_dir) = (manifest_dir.as_path(), out_dir.as_path());
    let guest_dir = manifest_dir.join(guest.dir);
    // The interface, wherever the guest's dep-info does not reach.
    println!("cargo:rerun-if-changed={}/../../wit", guest.dir);
    for file in ["Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={}/{file}", guest.dir);
    }
    // A missing path would make every build dirty; track it once it exists.
    if guest_dir.join(".cargo").exists() {
        println!("cargo:rerun-if-changed={}/.cargo", guest.dir);
    }

    let guest_target = out_dir.join(guest.target);
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
        // The same bytes from any checkout: panic locations name sources
        // relative to the repository and the registry, not this machine's
        // paths. (`--config` joins the guest's own target rustflags, which
        // RUSTFLAGS would replace.)
        .arg("--config")
        .arg(remap_paths(&guest_dir))
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

    let what = format!("the guest component {} ({})", guest.wasm, guest.dir);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run cargo for {what}: {e}"));
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
            "building {what} for wasm32-wasip2 failed ({}); see the output above. \
             If the target is missing: rustup target add wasm32-wasip2",
            output.status
        );
    }

    let built = guest_target.join("wasm32-wasip2/release").join(guest.wasm);
    track_dep_file(&built.with_extension("d"));

    let wasm = out_dir.join(guest.wasm);
    fs::copy(&built, &wasm)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), wasm.display()));
    println!("cargo:rustc-env={}={}", guest.env, wasm.display());
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

/// A `--config` value remapping the repository root (two levels above the
/// guest) and cargo's home to fixed names in the guest's debug strings.
fn remap_paths(guest_dir: &Path) -> String {
    let repo = guest_dir
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| guest_dir.join("../.."));
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let toml = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut flags = vec![format!(
        "\"--remap-path-prefix={}=/hermes-relay\"",
        toml(&repo.display().to_string())
    )];
    if let Some(home) = cargo_home {
        flags.push(format!(
            "\"--remap-path-prefix={}=/cargo\"",
            toml(&home.display().to_string())
        ));
    }
    format!("target.wasm32-wasip2.rustflags=[{}]", flags.join(", "))
}
