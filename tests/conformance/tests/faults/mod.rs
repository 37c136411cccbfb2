//! Network faults between the adapter and the connector, injected by the
//! test-support [`FaultProxy`] (issue 19): a half-open link, a cut in the
//! middle of a frame, 1-byte writes, refused and slow connections. Each
//! asserts that nothing is lost or delivered twice, and that every send
//! resolves once.

use relay_test_support::proxy::{Direction, Drop, FaultProxy};

use super::*;

/// A world whose adapter dials the connector through a fault proxy.
async fn proxied(tweak: impl FnOnce(&mut AdapterConfig)) -> (World, FaultProxy) {
    let stub = StubConnector::start(StubConfig::default())
        .await
        .expect("stub starts");
    let upstream = stub.addr();
    let proxy = FaultProxy::start(upstream).await.expect("proxy starts");
    let mut config = fast(proxy.url());
    tweak(&mut config);
    let (handle, events) = Adapter::spawn(plugin(), config)
        .await
        .expect("adapter spawns");
    let mut w = World {
        stub,
        handle,
        events,
        states: Vec::new(),
        fatals: Vec::new(),
    };
    w.state(State::Ready).await;
    (w, proxy)
}

/// Keepalive at test scale: ping every 200 ms, a pong due within 600 ms.
fn short_keepalive(c: &mut AdapterConfig) {
    c.limits.ping_interval = Duration::from_millis(200);
    c.limits.ping_timeout = Duration::from_millis(600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_link_is_detected_redialed_and_loses_nothing() {
    let (mut w, proxy) = proxied(short_keepalive).await;
    w.handshakes(1).await;
    // The link goes silent both ways; nothing closes.
    proxy.stall(Direction::Up, true);
    proxy.stall(Direction::Down, true);
    // A send written into the dead link, and a buffered inbound the
    // connector sends into it.
    let handle = w.handle.clone();
    let send = tokio::spawn(async move {
        handle
            .send("dm-1", "into the void", None, Map::new(), None)
            .await
    });
    w.stub
        .push_buffered(
            events::dm("discord", "dm-1", "u1", "during the stall"),
            Some("b-stall"),
        )
        .await;
    // Detected by the keepalive, closed and re-dialed.
    w.state(State::Reconnecting).await;
    let logs = relay_test_support::global_logs();
    assert!(
        logs.contains("relay connection closed (code 1011): keepalive ping timeout"),
        "{}",
        logs.text()
    );
    proxy.heal();
    w.handshakes(2).await;
    // The buffered inbound is replayed on the new connection and delivered once.
    let m = w.message().await;
    assert_eq!(m.buffer_id.as_deref(), Some("b-stall"));
    assert_eq!(m.text, "during the stall");
    m.accept();
    w.frame(|f| {
        f.frame_type() == Some("inbound_ack") && f.get("bufferId") == Some(&json!("b-stall"))
    })
    .await;
    // The send resolved once: its frame may have gone out, so ambiguous.
    let result = tokio::time::timeout(WAIT, send)
        .await
        .expect("send resolves")
        .unwrap();
    assert!(!result.success, "{result:?}");
    assert!(result.ambiguous, "{result:?}");
    // Nothing else arrives: no second delivery of the replayed message.
    assert!(
        w.events
            .try_next()
            .is_none_or(|e| !matches!(e, Event::Message(_)))
    );
    assert!(
        w.handle
            .send("dm-1", "after", None, Map::new(), None)
            .await
            .success
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_frame_redials_and_the_buffer_is_replayed_once() {
    let (mut w, proxy) = proxied(|_| {}).await;
    // The next frame down is cut 40 bytes in: the adapter sees a partial
    // line and a reset, never a frame.
    proxy.cut_after(Direction::Down, 40);
    w.stub
        .push_buffered(
            events::dm("discord", "dm-2", "u2", "cut in two"),
            Some("b-cut"),
        )
        .await;
    w.state(State::Reconnecting).await;
    w.handshakes(2).await;
    let m = w.message().await;
    assert_eq!(
        (m.buffer_id.as_deref(), m.text.as_str()),
        (Some("b-cut"), "cut in two")
    );
    m.accept();
    w.frame(|f| {
        f.frame_type() == Some("inbound_ack") && f.get("bufferId") == Some(&json!("b-cut"))
    })
    .await;
    // Delivered once: the partial line of the cut connection was dropped
    // with it, not parsed.
    assert!(
        w.events
            .try_next()
            .is_none_or(|e| !matches!(e, Event::Message(_)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_writes_and_delays_change_nothing() {
    let (mut w, proxy) = proxied(|_| {}).await;
    proxy.set_fragment(true);
    proxy.set_delay(Duration::from_millis(2));
    for i in 0..3 {
        let text = format!("slow {i}");
        w.stub
            .push_inbound(events::dm("discord", "dm-3", "u3", &text))
            .await
            .expect("push");
        let m = w.message().await;
        assert_eq!(m.text, text);
        m.accept();
    }
    let sent = w.send("dm-3", "a reply, byte by byte", json!({})).await;
    assert!(sent.success, "{sent:?}");
    assert_eq!(w.stub.connections().len(), 1, "no re-dial was needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_slow_connections_are_retried_on_the_ladder() {
    let (mut w, proxy) = proxied(|_| {}).await;
    proxy.refuse_next(2);
    proxy.delay_accept(Duration::from_millis(100));
    proxy.drop_all(Drop::Rst);
    w.state(State::Reconnecting).await;
    w.handshakes(2).await;
    w.state(State::Ready).await;
    assert_eq!(
        proxy
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let sent = w.send("dm-4", "back", json!({})).await;
    assert!(sent.success, "{sent:?}");
    proxy.drop_all(Drop::Fin);
    w.state(State::Reconnecting).await;
    w.handshakes(3).await;
}
