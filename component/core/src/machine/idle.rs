//! Going idle (spec §6.17, §6.18): shutdown (going idle, drain, close),
//! `go-dormant`, and the `going_idle` wait shared with overload.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdlePurpose {
    Shutdown,
    Dormant { request: u64 },
    Overload,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct IdleWait {
    pub(super) purpose: IdlePurpose,
    pub(super) deadline: u64,
}

#[derive(Debug, Clone, Default)]
pub(super) struct ShutdownState {
    pub(super) requests: Vec<u64>,
    /// Set once `going_idle` is settled: new sends fail, pending may finish.
    pub(super) drain_deadline: Option<u64>,
}

/// What the idle path owns.
#[derive(Debug, Default)]
pub(super) struct Idle {
    /// A `going_idle` awaiting its ack.
    pub(super) wait: Option<IdleWait>,
    /// Overloaded and acknowledged: the connector buffers.
    pub(super) overload: bool,
    /// Set while the re-dial that drains an overload replay is connecting:
    /// outbound requests made meanwhile are held, not failed.
    pub(super) drain_redial: bool,
    /// The connection whose `going_idle` wait timed out: a late ack on it
    /// still means the connector flipped to buffering.
    pub(super) timed_out_on: Option<u32>,
    pub(super) shutdown: Option<ShutdownState>,
}

impl Machine {
    /// The `going_idle` wait ended without an ack.
    pub(super) fn idle_wait_expired(&mut self, wait: IdleWait, t: u64) {
        match wait.purpose {
            IdlePurpose::Shutdown => {
                self.log(
                    Level::Info,
                    "relay going_idle not acknowledged in time; draining",
                );
                self.begin_drain(t);
            }
            IdlePurpose::Dormant { request } => {
                self.log(
                    Level::Info,
                    "relay going_idle not acknowledged; staying connected",
                );
                self.complete(request, Completion::Flag(false));
                self.idle.timed_out_on = self.live_conn();
            }
            IdlePurpose::Overload => {
                self.log(Level::Warn, "relay going_idle (overload) not acknowledged");
                self.idle.timed_out_on = self.live_conn();
            }
        }
    }

    pub(super) fn on_shutdown(&mut self, now: Now, request: u64) {
        if self.is_terminal() {
            self.complete(request, Completion::Done);
            return;
        }
        if let Some(sd) = &mut self.idle.shutdown {
            sd.requests.push(request);
            return;
        }
        self.idle.shutdown = Some(ShutdownState {
            requests: vec![request],
            drain_deadline: None,
        });
        match self.link.phase {
            Phase::Ready { conn, .. } => {
                if let Some(wait) = self.idle.wait.take()
                    && let IdlePurpose::Dormant { request } = wait.purpose
                {
                    self.complete(request, Completion::Flag(false));
                }
                if self.idle.overload {
                    // The connector already buffers; go straight to the drain.
                    self.begin_drain(now.mono_ns);
                } else {
                    self.send_frame(conn, &GatewayFrame::GoingIdle, None);
                    self.idle.wait = Some(IdleWait {
                        purpose: IdlePurpose::Shutdown,
                        deadline: now
                            .mono_ns
                            .saturating_add(ms(self.cfg.going_idle_timeout_ms)),
                    });
                }
            }
            Phase::Handshaking { conn, .. } => {
                self.close(conn, CLOSE_NORMAL, "shutdown");
                self.finish_shutdown();
            }
            Phase::Connecting { conn } => {
                self.close(conn, CLOSE_NORMAL, "shutdown");
                self.finish_shutdown();
            }
            _ => self.finish_shutdown(),
        }
    }

    pub(super) fn begin_drain(&mut self, t: u64) {
        let Some(sd) = &mut self.idle.shutdown else {
            return;
        };
        sd.drain_deadline = Some(t.saturating_add(ms(self.cfg.drain_grace_ms)));
        if self.outbound.pending.is_empty() {
            self.finish_shutdown();
        }
    }

    pub(super) fn finish_shutdown(&mut self) {
        match self.link.phase {
            Phase::Connecting { conn }
            | Phase::Handshaking { conn, .. }
            | Phase::Ready { conn, .. } => self.close(conn, CLOSE_NORMAL, "shutdown"),
            _ => {}
        }
        self.link.phase = Phase::Stopped;
        self.receive.decoder.reset();
        self.link.hold_until = None;
        // Whatever is still pending was written: the connector may have
        // applied it (§1.6, "waiter failed by teardown").
        self.fail_all_pending(SendResult::send_failed(
            crate::outcome::TRANSPORT_CLOSED,
            true,
        ));
        self.release_waiters();
        self.report(State::Stopped, "shutdown");
    }

    pub(super) fn on_go_dormant(&mut self, now: Now, request: u64) {
        let conn = match self.link.phase {
            Phase::Ready { conn, .. }
                if self.idle.wait.is_none() && self.idle.shutdown.is_none() =>
            {
                conn
            }
            _ => {
                self.complete(request, Completion::Flag(false));
                return;
            }
        };
        self.send_frame(conn, &GatewayFrame::GoingIdle, None);
        self.idle.wait = Some(IdleWait {
            purpose: IdlePurpose::Dormant { request },
            deadline: now
                .mono_ns
                .saturating_add(ms(self.cfg.going_idle_timeout_ms)),
        });
    }
}
