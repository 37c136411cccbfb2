//! `run --metrics-listen`: installs the Prometheus recorder for the
//! `metrics` facade and answers `GET /metrics` with a minimal HTTP/1.1
//! responder (one request per connection, then close). No authentication.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Buckets of `relay_outbound_latency_seconds`.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Time a client gets to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted request head.
const MAX_HEAD_BYTES: usize = 8192;
/// Cadence of the recorder's upkeep (histogram draining).
const UPKEEP: Duration = Duration::from_secs(5);

/// Binds `addr`, installs the recorder and serves it on background tasks;
/// returns the bound address.
pub async fn start(addr: SocketAddr) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics-listen {addr}: cannot listen: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("relay_outbound_latency_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("--metrics-listen {addr}: cannot install the recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(serve(listener, handle));
    Ok(local)
}

async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = respond(stream, &handle).await {
                        tracing::debug!(%peer, error = %e, "metrics request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the request head and answers it.
async fn respond(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            if head.len() > MAX_HEAD_BYTES {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(true)
    })
    .await;
    let (status, body) = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(false)) => ("431 Request Header Fields Too Large", String::new()),
        Ok(Ok(true)) => {
            let text = String::from_utf8_lossy(&head);
            let mut parts = text.lines().next().unwrap_or("").split_whitespace();
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
            match (method, path) {
                ("GET" | "HEAD", "/metrics") => ("200 OK", handle.render()),
                ("GET" | "HEAD", _) => ("404 Not Found", "not found; try /metrics\n".into()),
                _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
            }
        }
    };
    let head_only = head.starts_with(b"HEAD ");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
