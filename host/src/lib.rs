//! wasmtime host for the Hermes relay adapter component.
//!
//! The relay protocol logic lives in a WebAssembly component (`wit/v0.2/relay.wit`,
//! world `relay-adapter`); this crate owns everything around it: the engine
//! and the compiled component ([`Plugin`]), one tokio task per adapter that
//! owns its instance, the WebSockets and the timer the component asks for,
//! and the gateway-facing API ([`Adapter::spawn`], [`AdapterHandle`],
//! [`EventStream`]).
//!
//! Sandbox: no filesystem, environment, arguments or sockets for the
//! component; stdout/stderr go to `tracing`; linear memory is capped
//! ([`HostLimits::memory_bytes`]); every export call has a CPU budget
//! ([`HostLimits::call_budget`]); instance, table and memory counts are
//! bounded. A trap poisons the instance: the host closes its socket, fails
//! its pending requests, emits [`Event::Fatal`] with code `guest_trap`, and
//! re-instantiates it after a backoff, at most
//! [`HostLimits::restart_budget`] times per [`HostLimits::restart_window`];
//! past that the adapter stays down (`restart_budget_exhausted`). Other
//! adapters in the process are not affected.
//!
//! Metrics: every adapter publishes its counters and gauges, and an outbound
//! latency histogram, through the [`metrics`](https://docs.rs/metrics/0.24)
//! facade, labelled `adapter`; install a recorder before
//! [`Adapter::spawn`] to export them (the names are listed in
//! `docs/operations.md`). Without a recorder this is a no-op.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use relay_host::{Adapter, AdapterConfig, Event, Plugin};
//! let plugin = Plugin::new()?;
//! let (handle, mut events) = Adapter::spawn(&plugin, AdapterConfig::new("ws://127.0.0.1:9100")).await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Message(message) = event {
//!         println!("{}: {}", message.chat_id, message.text);
//!         message.accept();
//!     }
//! }
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Layers, bottom to top (docs/architecture.md; `.ci/layers.py` checks that
// no module imports one above it):
// 1. public types: config, types, error, metrics, tls
// 2. messages: admission, messages, events
// 3. handle
// 4. sandbox: socket, bindings, store, imports, cache, media
// 5. plugin
// 6. engines: engine (+ engine::native), bench, probe
// 7. actor
mod actor;
mod admission;
#[doc(hidden)]
pub mod bench;
mod bindings;
mod cache;
mod config;
mod engine;
mod error;
mod events;
mod handle;
mod imports;
#[doc(hidden)]
pub mod media;
mod messages;
mod metrics;
mod plugin;
#[doc(hidden)]
pub mod probe;
mod socket;
mod store;
mod tls;
mod types;

pub use actor::Adapter;
pub use config::{
    AdapterConfig, DEFAULT_MEMORY_BYTES, HostLimits, Identity, MIN_LINE_BYTES, MIN_MEMORY_BYTES,
    MediaOptions, Secret,
};
pub use error::{AdapterError, PluginError};
pub use events::{DeliveryAck, Event, EventStream, MessageEvent, PromptAnswer};
pub use handle::AdapterHandle;
#[cfg(feature = "embedded-component")]
pub use plugin::EMBEDDED_COMPONENT;
pub use plugin::{CacheUse, Plugin, PluginOptions};
pub use types::{
    ChatInfo, ChatLabels, HOST_API_VERSION, Health, MediaKind, MediaSendRequest, ProcessingOutcome,
    PromptOption, PromptRequest, RenameGuard, SUPPORTED_API_VERSIONS, SendResult, State,
};
