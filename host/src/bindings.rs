//! wasmtime bindings for `wit/relay.wit` (world `relay-adapter`). Exports are
//! `async` (they run on a fiber so the epoch callback can yield to tokio);
//! imports stay plain `fn(&mut self, ..)` methods.

wasmtime::component::bindgen!({
    world: "relay-adapter",
    path: "../wit",
    exports: { default: async },
});

pub(crate) use exports::hermes::relay::adapter as guest;
pub(crate) use hermes::relay::types as wit;
