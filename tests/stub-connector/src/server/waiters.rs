//! Deadline-bounded waiters of the stub's handle: every wait fails with
//! [`StubError::Timeout`] (naming what it waited for) instead of hanging.

use super::*;

impl StubConnector {
    /// Waits until `pred` holds for the state (checked now and after every
    /// change), or fails with [`StubError::Timeout`].
    pub async fn wait_until(
        &self,
        mut pred: impl FnMut(&StubState) -> bool,
        timeout: Duration,
    ) -> Result<(), StubError> {
        self.wait_named("condition", |s| pred(s).then_some(()), timeout)
            .await
    }

    /// Waits until `f` returns `Some`, and returns that value.
    pub async fn wait_for<T>(
        &self,
        f: impl FnMut(&StubState) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, StubError> {
        self.wait_named("condition", f, timeout).await
    }

    /// Waits for a frame (received at any time, earlier ones included)
    /// satisfying `pred`, and returns the first such frame.
    pub async fn wait_for_frame(
        &self,
        pred: impl FnMut(&ReceivedFrame) -> bool,
        timeout: Duration,
    ) -> Result<ReceivedFrame, StubError> {
        self.wait_for_frame_after(0, pred, timeout).await
    }

    /// Like [`StubConnector::wait_for_frame`], but only frames with
    /// `seq >= after` count (take `after` from
    /// [`StubConnector::frame_count`] before triggering the gateway).
    pub async fn wait_for_frame_after(
        &self,
        after: usize,
        mut pred: impl FnMut(&ReceivedFrame) -> bool,
        timeout: Duration,
    ) -> Result<ReceivedFrame, StubError> {
        self.wait_named(
            &format!("a matching frame at seq >= {after}"),
            |s| s.frames.iter().skip(after).find(|f| pred(f)).cloned(),
            timeout,
        )
        .await
    }

    /// Waits for a frame of this `type` (earlier ones included).
    pub async fn wait_for_frame_type(
        &self,
        frame_type: &str,
        timeout: Duration,
    ) -> Result<ReceivedFrame, StubError> {
        self.wait_named(
            &format!("a {frame_type:?} frame"),
            |s| s.frames_of_type(frame_type).next().cloned(),
            timeout,
        )
        .await
    }

    /// Waits until `n` frames satisfy `pred` and returns the first `n`.
    pub async fn wait_for_frames(
        &self,
        n: usize,
        mut pred: impl FnMut(&ReceivedFrame) -> bool,
        timeout: Duration,
    ) -> Result<Vec<ReceivedFrame>, StubError> {
        self.wait_named(
            &format!("{n} matching frames"),
            |s| {
                let found: Vec<ReceivedFrame> = s
                    .frames
                    .iter()
                    .filter(|f| pred(f))
                    .take(n)
                    .cloned()
                    .collect();
                (found.len() >= n).then_some(found)
            },
            timeout,
        )
        .await
    }

    /// Waits until `n` upgrade attempts have been decided (accepted,
    /// refused or rejected alike) and returns all attempts so far. Use
    /// [`StubConnector::wait_for_handshakes`] to wait for working
    /// connections.
    pub async fn wait_for_connections(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionInfo>, StubError> {
        self.wait_named(
            &format!("{n} connections"),
            |s| {
                let decided = s
                    .connections
                    .iter()
                    .filter(|c| c.state != ConnState::Upgrading)
                    .count();
                (decided >= n).then(|| s.connections.clone())
            },
            timeout,
        )
        .await
    }

    /// Waits until `n` connections have completed their hello handshake
    /// and returns the `n`-th of them.
    pub async fn wait_for_handshakes(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<ConnectionInfo, StubError> {
        let nth = n.max(1) - 1;
        self.wait_named(
            &format!("{n} handshaken connections"),
            |s| s.handshaken().nth(nth).cloned(),
            timeout,
        )
        .await
    }

    /// Waits until `buffer_id` has been acked at least once.
    pub async fn wait_for_ack(&self, buffer_id: &str, timeout: Duration) -> Result<(), StubError> {
        self.wait_named(
            &format!("inbound_ack {buffer_id:?}"),
            |s| (s.ack_count(buffer_id) > 0).then_some(()),
            timeout,
        )
        .await
    }

    /// Waits until connection `conn` is no longer open (or upgrading) and
    /// returns its final state.
    pub async fn wait_for_close(
        &self,
        conn: usize,
        timeout: Duration,
    ) -> Result<ConnState, StubError> {
        self.wait_named(
            &format!("connection {conn} to close"),
            |s| {
                s.connections.get(conn).and_then(|c| match c.state {
                    ConnState::Open | ConnState::Upgrading => None,
                    ref other => Some(other.clone()),
                })
            },
            timeout,
        )
        .await
    }

    /// Waits for the oldest outbound held by [`OutboundReply::NoAnswer`].
    pub async fn wait_for_pending_request(
        &self,
        timeout: Duration,
    ) -> Result<PendingRequest, StubError> {
        self.wait_named(
            "an unanswered outbound",
            |s| s.pending_requests.first().cloned(),
            timeout,
        )
        .await
    }

    pub(super) async fn wait_named<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&StubState) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, StubError> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.shared.version.subscribe();
        // Each pass re-checks after a state change; the deadline ends it.
        loop {
            changes.borrow_and_update();
            if let Some(found) = f(&self.shared.lock().state) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let summary = self.with_state(|s| {
                        format!(
                            "{} connections, {} frames, {} acks, {} buffered, idle={}",
                            s.connections.len(),
                            s.frames.len(),
                            s.acked_buffer_ids.len(),
                            s.buffer.len(),
                            s.idle
                        )
                    });
                    return Err(StubError::Timeout {
                        what: what.to_owned(),
                        waited: timeout,
                        summary,
                    });
                }
            }
        }
    }
}
