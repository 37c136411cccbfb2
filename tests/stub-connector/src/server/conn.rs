//! Connections: the accept loop (which routes media requests away by their
//! request line), the HTTP upgrade (path, scripted fates, bearer
//! verification), and one task per connection reading lines.

use super::*;

pub(super) fn spawn_deferred(shared: &Arc<Shared>, items: Vec<Deferred>) {
    for item in items {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let after = match &item {
                Deferred::Line { after, .. } | Deferred::IdleAck { after, .. } => *after,
            };
            // The delay is the behaviour under test, not a synchronisation.
            tokio::select! {
                () = tokio::time::sleep(after) => {}
                () = until_shutdown(shared.shutdown.clone()) => return,
            }
            shared.update(|inner| match item {
                Deferred::Line { conn, line, .. } => inner.send_text(conn, line, None),
                Deferred::IdleAck { conn, .. } => inner.flip_idle(conn),
            });
        });
    }
}

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    // Runs until shutdown; each pass handles one accepted socket.
    loop {
        tokio::select! {
            () = until_shutdown(shared.shutdown.clone()) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(dispatch(Arc::clone(&shared), tcp, peer));
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
        }
    }
}

/// Sends one accepted socket to the media endpoints or the upgrade path,
/// by its request line. Media requests are never recorded as connection
/// attempts and never consume upgrade fates.
pub(super) async fn dispatch(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let accepted_at = SystemTime::now();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    // Frames are small and latency matters more than throughput here.
    let _ = tcp.set_nodelay(true);
    let route = tokio::select! {
        route = plain_http::classify(&tcp, deadline) => route,
        () = until_shutdown(shared.shutdown.clone()) => return,
    };
    match route {
        plain_http::Route::Media { method, target } => {
            media::serve(shared, tcp, peer, accepted_at, (method, target), deadline).await;
        }
        plain_http::Route::Upgrade => serve(shared, tcp, peer, accepted_at, deadline).await,
    }
}

pub(super) fn set_conn_state(inner: &mut Inner, index: usize, state: ConnState) {
    if let Some(info) = inner.state.connections.get_mut(index) {
        info.state = state;
    }
}

// The upgrade callback's error type is fixed by tungstenite's `Callback`.
#[allow(clippy::result_large_err)]
pub(super) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted_at: SystemTime,
    deadline: Instant,
) {
    // What the request-line peek left of the handshake budget; taken now so
    // that a scripted `Delay` still holds the upgrade outside the budget.
    let budget = deadline.saturating_duration_since(Instant::now());
    let (index, fate) = shared.update(|inner| {
        let index = inner.state.connections.len();
        inner.state.connections.push(ConnectionInfo {
            index,
            accepted_at,
            peer,
            path: String::new(),
            headers: Vec::new(),
            gateway_id: None,
            hellos: Vec::new(),
            handshaken: false,
            state: ConnState::Upgrading,
        });
        (index, inner.fates.pop_front())
    });
    let fate = match fate {
        Some(UpgradeFate::Delay(delay)) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = until_shutdown(shared.shutdown.clone()) => return,
            }
            None
        }
        other => other,
    };

    let admission: Arc<Mutex<Option<Admission>>> = Arc::new(Mutex::new(None));
    let callback = {
        let shared = Arc::clone(&shared);
        let admission = Arc::clone(&admission);
        move |request: &Request, response: Response| {
            let decided = shared.update(|inner| admit(inner, index, request, fate));
            let refusal = match &decided {
                Admission::Refused { status, body } => Some(error_response(*status, body.clone())),
                _ => None,
            };
            *admission.lock().unwrap_or_else(PoisonError::into_inner) = Some(decided);
            match refusal {
                Some(refusal) => Err(refusal),
                None => Ok(response),
            }
        }
    };
    let accepted = tokio::select! {
        r = tokio::time::timeout(
            budget,
            tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(shared.ws_config)),
        ) => r,
        () = until_shutdown(shared.shutdown.clone()) => return,
    };
    let admission = admission
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (accepted, admission) {
        (Ok(Ok(ws)), Some(Admission::Close { code, reason })) => {
            reject(&shared, index, ws, code, reason).await;
        }
        (Ok(Ok(ws)), Some(Admission::Open { gateway_id })) => {
            run_connection(&shared, index, ws, gateway_id).await;
        }
        (Ok(Ok(ws)), _) => run_connection(&shared, index, ws, None).await,
        (Ok(Err(_)), Some(Admission::Refused { status, .. })) => {
            shared.update(|inner| set_conn_state(inner, index, ConnState::Refused { status }));
        }
        (Ok(Err(error)), _) => {
            let error = error.to_string();
            shared.update(|inner| set_conn_state(inner, index, ConnState::Failed { error }));
        }
        (Err(_), _) => {
            let error = "upgrade timed out".to_owned();
            shared.update(|inner| set_conn_state(inner, index, ConnState::Failed { error }));
        }
    }
}

/// Decides an upgrade: path, queued fate, then bearer verification.
pub(super) fn admit(
    inner: &mut Inner,
    index: usize,
    request: &Request,
    fate: Option<UpgradeFate>,
) -> Admission {
    let path = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(info) = inner.state.connections.get_mut(index) {
        info.path = path.clone();
        info.headers = headers;
    }
    if path != "/relay" {
        return Admission::Refused {
            status: 400,
            body: None,
        };
    }
    match fate {
        Some(UpgradeFate::Http { status, body }) => {
            return Admission::Refused {
                status,
                body: Some(body),
            };
        }
        Some(UpgradeFate::CloseAfterAccept { code, reason }) => {
            return Admission::Close { code, reason };
        }
        Some(UpgradeFate::Delay(_)) | None => {}
    }
    if inner.config.secrets.is_empty() {
        return Admission::Open { gateway_id: None };
    }
    let now = inner.config.clock.now();
    let verdict = authorization
        .as_deref()
        .and_then(auth::bearer_token)
        .ok_or(auth::AuthError::Missing)
        .and_then(|token| auth::verify_token(token, &inner.config.secrets, now));
    match verdict {
        Ok(gateway_id) => Admission::Open {
            gateway_id: Some(gateway_id),
        },
        Err(error) => {
            tracing::info!(%error, index, "rejecting upgrade");
            Admission::Close {
                code: 4401,
                reason: error.close_reason().to_owned(),
            }
        }
    }
}

pub(super) fn error_response(status: u16, body: Option<String>) -> ErrorResponse {
    let body = body.unwrap_or_else(|| {
        if status == 400 {
            "websocket upgrades are served only on /relay\n".to_owned()
        } else {
            format!("refused by stub connector ({status})\n")
        }
    });
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = http::Response::new(Some(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

pub(super) fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    }))
}

pub(super) async fn reject(
    shared: &Arc<Shared>,
    index: usize,
    mut ws: WebSocketStream<TcpStream>,
    code: u16,
    reason: String,
) {
    let _ = ws.send(close_message(code, &reason)).await;
    shared.update(|inner| set_conn_state(inner, index, ConnState::Rejected { code, reason }));
    // Let the client answer the close so it sees a clean close frame; the
    // grace period bounds a client that never does.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Splits a byte stream into `\n`-terminated lines across messages.
#[derive(Default)]
pub(super) struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in self.partial.iter().enumerate() {
            if *b == b'\n' {
                lines.push(self.partial[start..i].to_vec());
                start = i + 1;
            }
        }
        self.partial.drain(..start);
        lines
    }
}

pub(super) async fn run_connection(
    shared: &Arc<Shared>,
    index: usize,
    ws: WebSocketStream<TcpStream>,
    gateway_id: Option<String>,
) {
    let (link, mut commands) = mpsc::unbounded_channel();
    shared.update(|inner| {
        inner.links.insert(index, link);
        if let Some(info) = inner.state.connections.get_mut(index) {
            info.gateway_id = gateway_id;
            info.state = ConnState::Open;
        }
    });
    let (mut sink, mut stream) = ws.split();
    let mut lines = LineBuffer::default();
    let mut our_close: Option<(u16, String)> = None;
    let mut peer_close: Option<(Option<u16>, String)> = None;
    let mut close_deadline: Option<Instant> = None;
    let shutdown = until_shutdown(shared.shutdown.clone());
    tokio::pin!(shutdown);

    // Runs until the socket ends, the stub drops it, or shutdown.
    let dropped_by_stub = loop {
        let deadline = close_deadline;
        let close_timer = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown, if our_close.is_none() => {
                let reason = "stub connector shutting down".to_owned();
                let _ = sink.send(close_message(1001, &reason)).await;
                our_close = Some((1001, reason));
                close_deadline = Some(Instant::now() + CLOSE_GRACE);
            }
            () = close_timer => break false,
            command = commands.recv() => match command {
                Some(Cmd::Send(message, done)) => {
                    let result = if our_close.is_some() {
                        Err("connection is closing".to_owned())
                    } else {
                        sink.send(message).await.map_err(|e| e.to_string())
                    };
                    let failed = result.is_err() && our_close.is_none();
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                    if failed {
                        break false;
                    }
                }
                Some(Cmd::Close(code, reason, done)) => {
                    let result = if our_close.is_some() {
                        Err("connection is already closing".to_owned())
                    } else {
                        sink.send(close_message(code, &reason)).await.map_err(|e| e.to_string())
                    };
                    if result.is_ok() {
                        our_close = Some((code, reason));
                        close_deadline = Some(Instant::now() + CLOSE_GRACE);
                    }
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                }
                Some(Cmd::Drop(done)) => {
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                    break true;
                }
                None => break false,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !feed(shared, index, &mut lines, text.as_bytes()) {
                        let _ = sink.send(close_message(1009, "line too long")).await;
                        break false;
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if !feed(shared, index, &mut lines, &bytes) {
                        let _ = sink.send(close_message(1009, "line too long")).await;
                        break false;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if our_close.is_none() {
                        peer_close = Some(match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                            None => (None, String::new()),
                        });
                    }
                    // Keep polling: the library sends our close reply and
                    // then ends the stream.
                    close_deadline.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break false,
            },
        }
    };

    let state = if dropped_by_stub {
        ConnState::Closed {
            by: Closer::Dropped,
            code: None,
            reason: "dropped by stub".into(),
        }
    } else if let Some((code, reason)) = our_close {
        ConnState::Closed {
            by: Closer::Stub,
            code: Some(code),
            reason,
        }
    } else if let Some((code, reason)) = peer_close {
        ConnState::Closed {
            by: Closer::Gateway,
            code,
            reason,
        }
    } else {
        ConnState::Closed {
            by: Closer::Dropped,
            code: None,
            reason: String::new(),
        }
    };
    shared.update(|inner| {
        inner.links.remove(&index);
        set_conn_state(inner, index, state);
    });
    if shared.shutting_down() {
        tracing::debug!(index, "connection ended by shutdown");
    }
}

/// Records and reacts to every complete line; false when the gateway sent
/// an over-long partial line.
pub(super) fn feed(
    shared: &Arc<Shared>,
    index: usize,
    lines: &mut LineBuffer,
    bytes: &[u8],
) -> bool {
    for line in lines.feed(bytes) {
        let deferred = shared.update(|inner| inner.on_line(index, &line));
        spawn_deferred(shared, deferred);
    }
    lines.partial.len() <= MAX_PARTIAL_LINE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_joins_and_splits() {
        let mut buf = LineBuffer::default();
        assert!(buf.feed(b"{\"a\":").is_empty());
        assert_eq!(
            buf.feed(b"1}\n{\"b\":2}\n{\"c\""),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(buf.partial, b"{\"c\"".to_vec());
        // A UTF-8 character cut across two feeds comes out whole.
        let snow = "☃".as_bytes();
        assert!(buf.feed(&snow[..1]).is_empty());
        let out = buf.feed(&[&snow[1..], b"\n"].concat());
        assert_eq!(String::from_utf8(out[0].clone()).unwrap(), "{\"c\"☃");
    }

    #[test]
    fn sized_line_is_exact() {
        let line = sized_line(json!({"type": "x"}), 100).unwrap();
        assert_eq!(line.len(), 100);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["type"], "x");
        assert!(sized_line(json!({"type": "x"}), 5).is_err());
        assert!(sized_line(json!([1]), 100).is_err());
    }

    #[test]
    fn even_cuts_respect_char_boundaries() {
        assert_eq!(even_cuts("abcdef", 3), vec![2, 4]);
        assert_eq!(even_cuts("ab", 5), vec![1]);
        assert!(even_cuts("", 3).is_empty());
        let text = "ééé";
        for cut in even_cuts(text, 3) {
            assert!(text.is_char_boundary(cut));
        }
        assert_eq!(even_cuts(text, 3).len(), 2);
    }

    #[test]
    fn split_offsets_are_validated() {
        assert_eq!(
            split_at_offsets(b"abcdef", &[2, 4]).unwrap(),
            vec![&b"ab"[..], &b"cd"[..], &b"ef"[..]]
        );
        assert!(split_at_offsets(b"abc", &[0]).is_err());
        assert!(split_at_offsets(b"abc", &[2, 2]).is_err());
        assert!(split_at_offsets(b"abc", &[3]).is_err());
    }

    #[test]
    fn stringify_matches_wire_rules() {
        assert_eq!(stringify(None), "");
        assert_eq!(stringify(Some(&json!(null))), "");
        assert_eq!(stringify(Some(&json!("x"))), "x");
        assert_eq!(stringify(Some(&json!(12))), "12");
    }
}
