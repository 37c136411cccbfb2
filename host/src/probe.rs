//! Test probes, not API: internals driven directly by the integration tests
//! where no public path reaches them (the library has no unit-test binary;
//! see `host/Cargo.toml`).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::socket::{self, IoKind, IoSink, SocketSettings};

/// Dials `url`, waits until the connection opened, cancels its task (as a
/// runtime shutdown or a panic would end it) and returns every report the
/// connection made, as `opened` / `closed CODE` / `dial_failed CODE` /
/// `text` / `binary`, until `settle` passed without one.
pub async fn reports_of_a_cancelled_connection(
    url: &str,
    settle: Duration,
) -> Result<Vec<String>, String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_out_tx, out_rx) = mpsc::unbounded_channel();
    let settings = SocketSettings {
        tls: crate::tls::client_config(None)?,
        connect_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(30),
        ping_timeout: Duration::from_secs(60),
        max_message_bytes: 1 << 20,
    };
    let task = socket::spawn_connection(
        1,
        socket::next_token(),
        url.to_string(),
        Vec::new(),
        settings,
        IoSink::new(tx, 1 << 20),
        out_rx,
    );
    let mut reports = Vec::new();
    let mut aborted = false;
    while let Ok(Some(event)) = tokio::time::timeout(settle, rx.recv()).await {
        let report = match event.kind {
            IoKind::Opened => "opened".to_string(),
            IoKind::DialFailed { code, .. } => format!("dial_failed {code}"),
            IoKind::Text(..) => "text".to_string(),
            IoKind::Binary(..) => "binary".to_string(),
            IoKind::Closed { code, .. } => format!("closed {code}"),
        };
        let opened = report == "opened";
        reports.push(report);
        if opened && !aborted {
            task.abort();
            aborted = true;
        }
    }
    Ok(reports)
}
