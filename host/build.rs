//! With the `embedded-component` feature (on by default), builds the relay
//! adapter component (`component/guest`, `relay_guest.wasm`) for
//! `wasm32-wasip2` and hands its path to the crate as `RELAY_GUEST_WASM`;
//! `Plugin::new` and `Plugin::shared` embed it. Without the feature nothing
//! is built and no wasm32 target is needed: components are then loaded with
//! `Plugin::from_file` / `Plugin::from_bytes`. The test-only misbehaving
//! component is built by `tests/artifacts` (`relay-test-artifacts`), which
//! only tests depend on.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_EMBEDDED_COMPONENT").is_some() {
        relay_guest_build::build(&relay_guest_build::Guest {
            dir: "../component/guest",
            wasm: "relay_guest.wasm",
            env: "RELAY_GUEST_WASM",
            target: "guest-target",
        });
    }
}
