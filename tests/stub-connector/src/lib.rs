//! Stub relay connector: the connector side of the Hermes relay protocol
//! over a real WebSocket, scriptable from Rust tests and from JSON-lines
//! scripts. Written from the wire contract only; shares no code with the adapter.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use relay_stub::{StubConfig, StubConnector, events};
//!
//! let stub = StubConnector::start(StubConfig::default()).await?;
//! // … point the gateway at stub.url() …
//! stub.wait_for_handshakes(1, Duration::from_secs(5)).await?;
//! stub.push_inbound(events::discord_text("hi")).await?;
//! let send = stub
//!     .wait_for_frame(|f| f.op() == Some("send"), Duration::from_secs(5))
//!     .await?;
//! assert_eq!(send.get("action").and_then(|a| a.get("chat_id")), Some(&"chan1".into()));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod burst;
mod model;
pub mod script;
mod server;

pub use model::{
    BufferEntry, Clock, Closer, ConnState, ConnectionInfo, DEFAULT_MAX_MEDIA_SIZE, Deliverable,
    Delivery, Hello, HelloReply, IdleReply, MediaRequest, OutboundReply, Passthrough,
    PendingRequest, ReceivedFrame, ReplayMode, StoredMedia, StubConfig, StubState, UpgradeFate,
    descriptors, events,
};

pub use script::{Report, SCRIPT_HELP, ScriptError, ScriptRunner, json_contains, run_script};
pub use server::{StubConnector, StubError, WireMessage};
