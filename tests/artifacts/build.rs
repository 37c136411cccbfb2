//! Builds the TEST ONLY misbehaving component (`component/test-guest`) for
//! `wasm32-wasip2` as `RELAY_TEST_GUEST_WASM`. Only tests depend on this
//! crate, so an embedder of `relay-host` never builds it.

fn main() {
    relay_guest_build::build(&relay_guest_build::Guest {
        dir: "../../component/test-guest",
        wasm: "relay_test_guest.wasm",
        env: "RELAY_TEST_GUEST_WASM",
        target: "test-guest-target",
    });
}
