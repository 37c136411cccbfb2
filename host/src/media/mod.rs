//! Media downloads and uploads the component asks the host for, done on
//! tokio tasks with `reqwest`, and the rules the host enforces on them by
//! itself, because only the host sees real addresses (the Python reference
//! leaked the bearer to other hosts and allowed SSRF; these rules close
//! both):
//!
//! - only `http` and `https` URLs, without user info;
//! - an `Authorization` (or `Proxy-Authorization`) header only to the
//!   connector's origin; uploads only to the connector's origin;
//! - every other origin must resolve to public addresses only
//!   ([`refused_ip`]) unless [`MediaSettings::allow_private`]: IP literals
//!   are checked before sending, names by the client's resolver, which
//!   hands the connection exactly the addresses it checked;
//! - no proxy, no redirect followed (a 3xx comes back with its headers and
//!   the component decides: each hop is a new, re-checked request), no
//!   decompression; TLS through the host's one rustls configuration
//!   (`crate::tls`);
//! - downloads go to new, randomly named files in the media directory
//!   ([`MediaClient::dir`]) and never outlive a failure; `delete` removes
//!   only such files;
//! - header values never appear in errors or logs (each request is logged
//!   at debug with its method, origin and path only).
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use std::time::Duration;
//! use relay_host::media::{FetchRequest, MediaClient, MediaSettings, Origin};
//! let connector = Origin::of_connector("wss://connector.example/relay").ok_or("bad url")?;
//! let client = MediaClient::new(MediaSettings {
//!     dir: "/var/lib/relay/media".into(),
//!     connector_origin: connector,
//!     allow_private: false,
//!     ca_file: None,
//!     user_agent: "relay-host".into(),
//! })?;
//! let outcome = client
//!     .fetch(FetchRequest {
//!         url: "https://connector.example/media/42".into(),
//!         headers: vec![("Authorization".into(), "Bearer ...".into())],
//!         max_bytes: 20 << 20,
//!         timeout: Duration::from_secs(30),
//!         want_headers: vec!["content-type".into()],
//!         name_hint: Some("photo.jpg".into()),
//!     })
//!     .await;
//! println!("{} {:?}", outcome.status, outcome.path);
//! # Ok(()) }
//! ```

mod client;
mod files;
mod guard;
mod types;

pub use client::MediaClient;
pub use files::extension_for;
pub use guard::refused_ip;
pub use types::{FetchRequest, MediaOutcome, MediaSettings, Origin, UploadRequest};
