//! wasmtime bindings for `wit/relay.wit` (world `relay-adapter`). Exports are
//! `async` (they run on a fiber so the epoch callback can yield to tokio);
//! imports stay plain `fn(&mut self, ..)` methods. Also the host-to-WIT
//! conversion of the adapter configuration.

use crate::config::{AdapterConfig, millis};

wasmtime::component::bindgen!({
    world: "relay-adapter",
    path: "../wit",
    exports: { default: async },
});

pub(crate) use exports::hermes::relay::adapter as guest;
pub(crate) use hermes::relay::types as wit;

/// The WIT config record for `config`.
pub(crate) fn wit_config(config: &AdapterConfig) -> wit::Config {
    wit::Config {
        identities: config
            .identities
            .iter()
            .map(|i| wit::Identity {
                platform: i.platform.clone(),
                bot_id: i.bot_id.clone(),
            })
            .collect(),
        connector_url: config.connector_url.clone(),
        gateway_id: config.gateway_id.clone(),
        secret: config.secret.as_ref().map(|s| s.expose().to_string()),
        token_ttl_secs: config.token_ttl_secs,
        handshake_timeout_ms: millis(config.handshake_timeout),
        outbound_timeout_ms: millis(config.outbound_timeout),
        reconnect: config.reconnect,
        reconnect_initial_ms: millis(config.reconnect_initial),
        reconnect_max_ms: millis(config.reconnect_max),
        reconnect_jitter: config.reconnect_jitter,
        stable_connection_ms: millis(config.stable_connection),
        dormant_redial_ms: millis(config.dormant_redial),
        redial_hold_max_ms: millis(config.redial_hold_max),
        going_idle_timeout_ms: millis(config.going_idle_timeout),
        drain_grace_ms: millis(config.drain_grace),
        max_pending: config.max_pending,
        max_undelivered: config.max_undelivered,
        seen_capacity: config.seen_capacity,
        route_capacity: config.route_capacity,
        max_line_bytes: config.max_line_bytes,
        authorization_is_upstream: config.authorization_is_upstream,
    }
}
