//! Test-only guest artifacts (as wasmtime's `test-programs/artifacts`): the
//! deliberately misbehaving component, built by this crate's build script.
//! Never a dependency of anything that ships.

#![forbid(unsafe_code)]

/// `component/test-guest` compiled to a component: panics, runaway loops,
/// memory growth and import floods on command (see its crate docs).
pub const TEST_GUEST_WASM: &[u8] = include_bytes!(env!("RELAY_TEST_GUEST_WASM"));
