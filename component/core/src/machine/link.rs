//! The link: the connection lifecycle (spec §1.4, §5.4, §6.18, §6.19).
//! Dials and their ids, the handshake, socket loss, the post-handshake 4401
//! fresh-token retry and revocation, the reconnect ladder and redial holds.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    NotStarted,
    Connecting {
        conn: u32,
    },
    Handshaking {
        conn: u32,
        deadline: u64,
    },
    Ready {
        conn: u32,
        ready_at: u64,
    },
    /// Waiting to dial (reconnect ladder or dormant cadence).
    Waiting {
        dial_at: u64,
    },
    Disabled,
    Stopped,
}

/// The post-handshake 4401 bookkeeping of §5.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FreshRetry {
    None,
    /// The next dial whose upgrade is accepted becomes the retry.
    Pending,
    /// This connection is the fresh-token retry: a 4401 on it is terminal.
    Conn(u32),
}

/// The connection lifecycle's own data.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) phase: Phase,
    /// Id of the next dial.
    pub(super) next_conn: u32,
    /// A handshake completed once (a 4401 before that is retried as usual).
    pub(super) handshake_ever: bool,
    /// Failed attempts on the current rung of the ladder.
    pub(super) attempts: u32,
    pub(super) fresh_retry: FreshRetry,
    /// Dialing is parked until then (`hold-redial`).
    pub(super) hold_until: Option<u64>,
    /// Closed on purpose by `go-dormant`: re-dials on the dormant cadence.
    pub(super) dormant: bool,
}

impl Link {
    pub(super) fn new() -> Link {
        Link {
            phase: Phase::NotStarted,
            next_conn: 1,
            handshake_ever: false,
            attempts: 0,
            fresh_retry: FreshRetry::None,
            hold_until: None,
            dormant: false,
        }
    }
}

impl Machine {
    pub(super) fn dial(&mut self, now: Now) {
        if self.is_terminal() {
            return;
        }
        let conn = self.link.next_conn;
        self.link.next_conn = self.link.next_conn.wrapping_add(1).max(1);
        self.receive.decoder.reset();
        let headers = bearer_header(
            &self.cfg.gateway_id,
            &self.cfg.secret,
            now.wall_secs,
            self.cfg.token_ttl_secs,
        )
        .into_iter()
        .collect::<Vec<_>>();
        if self.stats.dials > 0 {
            self.stats.reconnects += 1;
        }
        self.stats.dials += 1;
        self.link.phase = Phase::Connecting { conn };
        self.outputs.push_back(Output::Dial {
            conn,
            url: self.url.clone(),
            headers: Headers(headers),
        });
        let url = self.url.clone();
        self.report(State::Connecting, url);
    }

    pub(super) fn on_open(&mut self, t: u64, conn: u32) {
        if self.link.phase != (Phase::Connecting { conn }) {
            self.close(conn, CLOSE_NORMAL, "stale connection");
            return;
        }
        if self.link.fresh_retry == FreshRetry::Pending {
            self.link.fresh_retry = FreshRetry::Conn(conn);
        }
        self.link.phase = Phase::Handshaking {
            conn,
            deadline: t.saturating_add(ms(self.cfg.handshake_timeout_ms)),
        };
        for identity in self.identities.clone() {
            // The manifest goes only on the Discord hello (§2.2).
            let command_manifest = if identity.platform == "discord" {
                self.manifest.clone()
            } else {
                None
            };
            let hello = GatewayFrame::Hello {
                platform: identity.platform,
                bot_id: identity.bot_id,
                command_manifest,
            };
            self.send_frame(conn, &hello, None);
        }
        self.idle.drain_redial = false;
        for (request_id, frame) in std::mem::take(&mut self.outbound.held) {
            // A held request that timed out meanwhile is already answered.
            if self.outbound.pending.contains_key(&request_id) {
                self.send_frame(conn, &frame, Some(request_id));
            }
        }
        self.report(State::Handshaking, "");
    }

    pub(super) fn on_dial_failed(&mut self, now: Now, conn: u32, code: u16, reason: &str) {
        if self.link.phase != (Phase::Connecting { conn }) {
            return;
        }
        self.fail_held();
        if code == CLOSE_UNAUTHORIZED || code == 401 {
            self.stats.unauthorized += 1;
            self.on_unauthorized(now, conn, reason, true);
        } else {
            self.log(
                Level::Warn,
                format!("relay dial failed (code {code}): {reason}"),
            );
            self.attempt_failed(now, "dial failed");
        }
    }

    /// A failed write fails the request it carried. The socket is gone, but
    /// its close report (which the host always sends) carries the code that
    /// decides what happens next (a 4401 is not a network error), so the
    /// connection is torn down there, not here.
    pub(super) fn on_write_failed(&mut self, conn: u32, error: &str) {
        if self.live_conn() != Some(conn) {
            return;
        }
        if let Some((c, Some(request_id))) = self.last_polled_send.take()
            && c == conn
            && let Some(p) = self.take_pending(&request_id)
        {
            self.finish_pending(p, SendResult::send_failed(error, false));
        }
        self.log(
            Level::Debug,
            format!("relay write failed: {}", truncate(error, 128)),
        );
    }

    /// Everything that follows the loss of the live connection.
    pub(super) fn socket_lost(
        &mut self,
        now: Now,
        conn: u32,
        code: u16,
        reason: &str,
        by_us: bool,
    ) {
        let t = now.mono_ns;
        let stable = match self.link.phase {
            Phase::Ready { ready_at, .. } => {
                t.saturating_sub(ready_at) >= ms(self.cfg.stable_connection_ms)
            }
            _ => false,
        };
        self.link.phase = Phase::Waiting { dial_at: t };
        self.receive.decoder.reset();
        self.idle.overload = false;
        self.fail_all_pending(SendResult::connection_lost());
        if !by_us {
            self.log(
                Level::Info,
                format!(
                    "relay connection closed (code {code}): {}",
                    truncate(reason, 128)
                ),
            );
        }
        if let Some(wait) = self.idle.wait.take()
            && let IdlePurpose::Dormant { request } = wait.purpose
        {
            self.complete(request, Completion::Flag(false));
        }
        if self.idle.shutdown.is_some() {
            self.finish_shutdown();
            return;
        }
        if stable {
            self.link.attempts = 0;
        }
        if code == CLOSE_UNAUTHORIZED {
            self.stats.unauthorized += 1;
            self.on_unauthorized(now, conn, reason, false);
            return;
        }
        if self.link.fresh_retry == FreshRetry::Conn(conn) {
            self.link.fresh_retry = FreshRetry::None;
        }
        self.attempt_failed(now, "connection lost");
    }

    /// §5.4: decide between retry, fresh-token retry and revocation.
    pub(super) fn on_unauthorized(&mut self, now: Now, conn: u32, reason: &str, at_upgrade: bool) {
        let is_retry = self.link.fresh_retry == FreshRetry::Conn(conn)
            || (at_upgrade && self.link.fresh_retry == FreshRetry::Pending);
        if reason == REASON_EXPIRED {
            if is_retry {
                self.link.fresh_retry = FreshRetry::None;
            }
            self.log(
                Level::Info,
                "relay token expired (4401 expired); re-dialing with a fresh token",
            );
            self.attempt_failed(now, "token expired");
        } else if is_retry {
            self.revoke();
        } else if self.link.handshake_ever {
            self.log(
                Level::Warn,
                "relay 4401 after a successful handshake; one immediate re-dial with a fresh token",
            );
            self.link.fresh_retry = FreshRetry::Pending;
            self.dial(now);
        } else {
            self.log(Level::Warn, "relay 4401 before any handshake; retrying");
            self.attempt_failed(now, "unauthorized before handshake");
        }
    }

    pub(super) fn revoke(&mut self) {
        self.link.phase = Phase::Disabled;
        self.link.fresh_retry = FreshRetry::None;
        self.fail_all_pending(SendResult::connection_lost());
        self.release_waiters();
        self.report(State::Disabled, RELAY_DISABLED_MESSAGE);
        self.outputs.push_back(Output::Fatal {
            code: RELAY_DISABLED_CODE.to_owned(),
            message: RELAY_DISABLED_MESSAGE.to_owned(),
            retryable: false,
        });
    }

    /// Completes the go-dormant and shutdown requests still waiting.
    pub(super) fn release_waiters(&mut self) {
        if let Some(wait) = self.idle.wait.take()
            && let IdlePurpose::Dormant { request } = wait.purpose
        {
            self.complete(request, Completion::Flag(false));
        }
        if let Some(sd) = self.idle.shutdown.take() {
            for r in sd.requests {
                self.complete(r, Completion::Done);
            }
        }
    }

    /// A failed attempt climbs the ladder (§6.19).
    pub(super) fn attempt_failed(&mut self, now: Now, why: &str) {
        if self.is_terminal() {
            return;
        }
        if !self.cfg.reconnect {
            self.link.phase = Phase::Stopped;
            self.release_waiters();
            self.report(State::Stopped, format!("{why}; reconnect disabled"));
            return;
        }
        let exp = self.link.attempts.min(32);
        let rung = self
            .cfg
            .reconnect_initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.cfg.reconnect_max_ms);
        self.link.attempts = self.link.attempts.saturating_add(1);
        let wait_ms = match self.cfg.reconnect_jitter {
            Some(f) => (rung as f64 * f.clamp(0.0, 1.0)) as u64,
            None => {
                let half = rung / 2;
                half + (self.rng.next_f64() * (rung - half) as f64) as u64
            }
        };
        self.link.phase = Phase::Waiting {
            dial_at: now.mono_ns.saturating_add(ms(wait_ms)),
        };
        self.link.dormant = false;
        self.report(
            State::Reconnecting,
            format!(
                "{why}; retry in {wait_ms} ms (attempt {})",
                self.link.attempts
            ),
        );
    }
}
