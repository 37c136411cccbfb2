//! The errors of the public API: [`AdapterError`] for adapter calls and
//! [`PluginError`] for loading and instantiating the component. The bottom
//! layer: plain types, no wasmtime.

use std::time::Duration;

/// Errors of the adapter API (commands that do not return a [`SendResult`](crate::SendResult)).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The adapter stopped (shut down, all handles dropped, or start refused).
    #[error("relay adapter stopped")]
    Stopped,
    /// The component trapped and is being re-instantiated; try again later.
    #[error("relay adapter restarting")]
    Restarting,
    /// Loading or instantiating the component failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The configuration is out of range
    /// ([`AdapterConfig::validate`](crate::AdapterConfig::validate)); the
    /// text names every value that is.
    #[error("invalid relay adapter configuration: {0}")]
    Config(String),
    /// The component refused the configuration (`start` returned an error).
    #[error("relay adapter refused its configuration: {0}")]
    Start(String),
    /// The component trapped during the call.
    #[error("relay component trapped: {0}")]
    Trap(String),
    /// The component has no export for the call: it was built against an
    /// older WIT version (a 0.1 component:
    /// `not supported by this component (api 0.1.0)`). Definite: nothing
    /// changed.
    #[error("{0}")]
    Unsupported(String),
    /// The component answered with something unexpected.
    #[error("relay component misbehaved: {0}")]
    Guest(String),
    /// Every request slot (`max_pending`) stayed busy for the caller's
    /// whole admission timeout
    /// ([`AdapterConfig::admission_timeout`](crate::AdapterConfig::admission_timeout),
    /// or [`AdapterHandle::with_admission_timeout`](crate::AdapterHandle::with_admission_timeout)). Definite: nothing was
    /// sent.
    #[error("relay admission timed out: all {slots} request slots stayed busy for {waited:?}")]
    AdmissionTimedOut {
        /// The number of slots (`max_pending`).
        slots: u32,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The adapter is shutting down or stopped: a request still waiting
    /// for admission, or made after `shutdown`, is not sent.
    #[error("{}", relay_core::outcome::TRANSPORT_CLOSED)]
    Closed,
    /// The adapter is down for good: its restart budget
    /// ([`HostLimits::restart_budget`](crate::HostLimits::restart_budget))
    /// is spent. The text says why (the last trap included).
    #[error("relay adapter down: {0}")]
    Down(String),
}

/// Errors loading or instantiating the relay component.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be created.
    #[error("relay component: engine setup failed: {0}")]
    Engine(String),
    /// The component file could not be read.
    #[error("relay component: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid component, or its imports/exports do not
    /// match `relay-adapter`.
    #[error("relay component rejected: {0}")]
    Invalid(String),
    /// Instantiation failed (out of memory, start trap, ...).
    #[error("relay component: instantiation failed: {0}")]
    Instantiate(String),
    /// The component's `api-version` is not the version of the `adapter`
    /// interface it exports.
    #[error(
        "relay component speaks api-version {found}; it exports the {exported} interface (same major.minor required)"
    )]
    IncompatibleVersion {
        /// What the component reported.
        found: String,
        /// The version of the `adapter` interface it exports.
        exported: String,
    },
}
