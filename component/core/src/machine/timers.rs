//! The one timer table: every kind of deadline the machine keeps, when
//! each is due (read from the sub-state that owns it), the earliest of them
//! published as the one deadline, and what firing each one does.

use super::*;

/// The kinds of timer, in the order they fire when several are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// `hold-redial` expires (§6.18).
    RedialHold,
    /// No descriptor within the handshake timeout (§1.4).
    Handshake,
    /// The next dial (ladder, dormant cadence), not before a hold ends.
    Dial,
    /// The earliest outbound request without a result (§1.6).
    Outbound,
    /// The `going_idle` wait (shutdown, dormancy, overload).
    IdleWait,
    /// Shutdown's drain grace.
    Drain,
    /// The earliest auto-thread wait (§6.13).
    AutoThread,
    /// A media report overdue, or a downloaded file past its retention.
    Media,
}

impl Timer {
    const ALL: [Timer; 8] = [
        Timer::RedialHold,
        Timer::Handshake,
        Timer::Dial,
        Timer::Outbound,
        Timer::IdleWait,
        Timer::Drain,
        Timer::AutoThread,
        Timer::Media,
    ];
}

impl Machine {
    /// When `timer` is due (monotonic ns), or `None` when it is not armed.
    fn due(&self, timer: Timer) -> Option<u64> {
        match timer {
            Timer::RedialHold => self.link.hold_until,
            Timer::Handshake => match self.link.phase {
                Phase::Handshaking { deadline, .. } => Some(deadline),
                _ => None,
            },
            Timer::Dial => match self.link.phase {
                Phase::Waiting { dial_at } => {
                    Some(self.link.hold_until.map_or(dial_at, |h| h.max(dial_at)))
                }
                _ => None,
            },
            Timer::Outbound => self
                .outbound
                .timeouts
                .first_key_value()
                .map(|(&(at, _), _)| at),
            Timer::IdleWait => self.idle.wait.map(|w| w.deadline),
            Timer::Drain => self.idle.shutdown.as_ref().and_then(|s| s.drain_deadline),
            Timer::AutoThread => self.lanes.next_wait_deadline(),
            Timer::Media => self.media.next_deadline(),
        }
    }

    /// The one deadline: the earliest armed timer.
    fn next_deadline(&self) -> Option<u64> {
        Timer::ALL.iter().filter_map(|&t| self.due(t)).min()
    }

    /// Fires every timer due at `now`, in [`Timer::ALL`] order; a timer is
    /// re-read right before it fires, since an earlier one may have moved it.
    pub(super) fn on_timers(&mut self, now: Now) {
        for timer in Timer::ALL {
            if self.due(timer).is_some_and(|at| now.mono_ns >= at) {
                self.fire(timer, now);
            }
        }
    }

    fn fire(&mut self, timer: Timer, now: Now) {
        let t = now.mono_ns;
        match timer {
            Timer::RedialHold => {
                self.link.hold_until = None;
                self.log(Level::Info, "relay redial hold expired");
            }
            Timer::Handshake => {
                if let Phase::Handshaking { conn, .. } = self.link.phase {
                    self.log(Level::Warn, "relay handshake timed out");
                    self.close(conn, CLOSE_NORMAL, "handshake timed out");
                    self.socket_lost(now, conn, CLOSE_NORMAL, "handshake timed out", true);
                }
            }
            Timer::Dial => self.dial(now),
            Timer::Outbound => self.expire_requests(t),
            Timer::IdleWait => {
                if let Some(wait) = self.idle.wait.take() {
                    self.idle_wait_expired(wait, t);
                }
            }
            Timer::Drain => self.finish_shutdown(),
            Timer::AutoThread => self.expire_auto_thread_waits(t),
            Timer::Media => self.expire_media(now),
        }
    }

    pub(super) fn update_deadline(&mut self, force: bool) {
        let next = self.next_deadline();
        if force || next != self.last_deadline {
            self.last_deadline = next;
            self.outputs.push_back(Output::SetDeadline(next));
        }
    }
}
