//! wasmtime bindings for `wit/v0.2` (`hermes:relay@0.2.0`, released and
//! frozen, the version the built-in component speaks; world
//! `relay-adapter`); its `bindgen!` input never changes again. Exports
//! are `async` (they run on a fiber so the epoch callback can yield to
//! tokio); imports stay plain `fn(&mut self, ..)` methods. Also the
//! host-to-WIT conversion of the adapter configuration.

wasmtime::component::bindgen!({
    world: "hermes:relay/relay-adapter@0.2.0",
    path: "../wit/v0.2",
    exports: { default: async },
});

pub(crate) use exports::hermes::relay::adapter as guest;
pub(crate) use hermes::relay::types as wit;

/// The adapter interface this module binds (the export the host probes for).
pub(crate) const ADAPTER_EXPORT: &str = "hermes:relay/adapter@0.2.0";

wit_config!(
    v0_2,
    platform_extra = |c: &crate::config::AdapterConfig| c.platform_extra_json(),
    prompt_nonce = |c: &crate::config::AdapterConfig| c.prompt_nonce.clone().unwrap_or_default(),
    command_manifest = |c: &crate::config::AdapterConfig| c.command_manifest_json(),
    media = media_config
);

/// The WIT `media-config` of the adapter's media options (`enabled` false
/// without a client: the component then asks for no media I/O).
fn media_config(c: &crate::config::AdapterConfig) -> wit::MediaConfig {
    use crate::config::millis;
    let defaults = crate::config::MediaOptions::new("");
    let m = c.media.as_ref().unwrap_or(&defaults);
    wit::MediaConfig {
        enabled: c.media.is_some(),
        max_bytes: m.max_bytes,
        timeout_ms: millis(m.timeout),
        retention_ms: millis(m.retention),
        max_files: m.max_files,
        max_total_bytes: m.max_total_bytes,
    }
}
