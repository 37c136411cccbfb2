//! wasmtime bindings for `wit/v0.1` (`hermes:relay@0.1.0`, released and
//! frozen), so components built against 0.1.0 keep running. Never edited
//! once 0.2.0 is released, like the folder it binds. The host state
//! implements its imports and the engine calls its exports through the same
//! code as the newest version (`crate::imports`, `crate::engine`) while the
//! two have the same shape; once 0.2 changes a record, its conversions live
//! here.

wasmtime::component::bindgen!({
    world: "hermes:relay/relay-adapter@0.1.0",
    path: "../wit/v0.1",
    exports: { default: async },
});

pub(crate) use exports::hermes::relay::adapter as guest;
pub(crate) use hermes::relay::types as wit;

/// The adapter interface this module binds (the export the host probes for).
pub(crate) const ADAPTER_EXPORT: &str = "hermes:relay/adapter@0.1.0";

wit_config!(v0_1);
