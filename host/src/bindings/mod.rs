//! The WIT versions this host binds, one module per folder under `wit/`
//! ([`v0_1`] and [`v0_2`], both released and frozen; the built-in component
//! speaks 0.2), and the choice between them: [`Api::of`] reads which
//! `adapter` interface a component exports before it is instantiated.

use wasmtime::component::{Component, HasSelf, Linker};

use crate::store::HostState;

/// `wit_config(&AdapterConfig)`: the `config` record of the version module
/// `$v`. One text for every version while their `config` records have the
/// same fields, plus the fields a later version added (`field = fn(&config)`).
macro_rules! wit_config {
    ($v:ident $(, $field:ident = $value:expr)*) => {
        /// The WIT config record for `config`.
        pub(crate) fn wit_config(
            config: &crate::config::AdapterConfig,
        ) -> crate::bindings::$v::wit::Config {
            use crate::bindings::$v::wit;
            use crate::config::millis;
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
                $($field: ($value)(config),)*
            }
        }
    };
}

pub(crate) mod v0_1;
pub(crate) mod v0_2;

/// The newest version: what the native engine and the configuration speak.
pub(crate) use v0_2::{hermes, wit, wit_config};

/// A WIT version the host binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    V0_1,
    V0_2,
}

impl Api {
    /// Newest first.
    const ALL: [Api; 2] = [Api::V0_2, Api::V0_1];

    /// The version whose `adapter` interface `component` exports (wasmtime
    /// matches `@0.2.0` to any `0.2.x`), or `None`.
    pub(crate) fn of(component: &Component) -> Option<Api> {
        Self::ALL.into_iter().find(|api| {
            component
                .get_export_index(None, api.adapter_export())
                .is_some()
        })
    }

    pub(crate) fn adapter_export(self) -> &'static str {
        match self {
            Api::V0_1 => v0_1::ADAPTER_EXPORT,
            Api::V0_2 => v0_2::ADAPTER_EXPORT,
        }
    }

    /// `major.minor`, as `api-version` must report it.
    pub(crate) fn major_minor(self) -> &'static str {
        match self {
            Api::V0_1 => "0.1",
            Api::V0_2 => "0.2",
        }
    }

    /// Links this version's `host` imports (WASI is linked by the caller).
    pub(crate) fn add_to_linker(self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        match self {
            Api::V0_1 => {
                v0_1::RelayAdapter::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
            }
            Api::V0_2 => {
                v0_2::RelayAdapter::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
            }
        }
    }
}

/// A linked component of either version, ready to instantiate.
pub(crate) enum AdapterPre {
    V0_1(v0_1::RelayAdapterPre<HostState>),
    V0_2(v0_2::RelayAdapterPre<HostState>),
}

/// An instance's bindings, of the version it was linked as.
pub(crate) enum Bindings {
    V0_1(v0_1::RelayAdapter),
    V0_2(v0_2::RelayAdapter),
}
