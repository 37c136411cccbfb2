//! Supervision: creating an instance and calling `start`, containing a
//! trap (the instance is dropped, its sockets closed, a `Fatal` event sent),
//! restarting with backoff within the restart budget, and going down for
//! good once the budget is spent.

use tokio::time::Instant;

use super::{Actor, Live};
use crate::engine::{self, Started};
use crate::error::AdapterError;
use crate::events::Event;
use crate::store::{self, StoreParts};

/// Longest trap description put into a `Fatal` event.
const TRAP_MESSAGE_MAX_BYTES: usize = 2048;

impl Actor {
    /// Creates an instance, checks it and calls `start`.
    pub(super) async fn start_instance(&mut self) -> Result<(), AdapterError> {
        let Some(events) = self.events.clone() else {
            return Err(self.unavailable());
        };
        self.instances += 1;
        let parts = StoreParts {
            instance: self.instances,
            events,
            verdicts: self.verdict_tx.clone(),
            media: self.media.clone(),
            dial_policy: self.dial_policy.clone(),
            sockets: self.sockets.clone(),
            io: self.io_tx.clone(),
            label: self.label.clone(),
        };
        let mut store = store::new_store(self.plugin.engine(), &self.config, parts);
        let (runner, started) = match engine::start(&self.plugin, &mut store, &self.config).await? {
            Started::Running(runner) => (runner, Ok(())),
            Started::Refused(reason) => return Err(AdapterError::Start(reason)),
            Started::Trapped(runner, trap) => (runner, Err(trap)),
        };
        self.live = Some(Live {
            store,
            runner,
            started: Instant::now(),
        });
        match started {
            Ok(()) => {
                self.after_call();
                Ok(())
            }
            Err(trap) => {
                let message = self.trap_message(&trap);
                self.drop_instance();
                Err(AdapterError::Trap(message))
            }
        }
    }

    pub(super) async fn restart(&mut self) {
        match self.start_instance().await {
            Ok(()) => tracing::info!(instance = self.instances, "relay component re-instantiated"),
            Err(AdapterError::Start(reason)) => {
                tracing::error!(
                    reason,
                    "relay component refused its configuration on restart"
                );
                self.emit_fatal("start_failed", format!("start refused: {reason}"), false);
                self.stopping = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "relay component restart failed");
                if self.restart_allowed() {
                    self.emit_fatal("restart_failed", e.to_string(), true);
                    self.schedule_restart();
                } else {
                    self.go_down(e.to_string());
                }
            }
        }
    }

    /// Why a call cannot reach an instance now.
    pub(super) fn unavailable(&self) -> AdapterError {
        match &self.down {
            Some(reason) => AdapterError::Down(reason.clone()),
            None => AdapterError::Restarting,
        }
    }

    /// Whether one more restart fits the budget; if so, it is counted.
    pub(super) fn restart_allowed(&mut self) -> bool {
        let limits = &self.config.limits;
        let now = Instant::now();
        while self
            .restart_log
            .front()
            .is_some_and(|at| now.duration_since(*at) >= limits.restart_window)
        {
            self.restart_log.pop_front();
        }
        let budget = usize::try_from(limits.restart_budget).unwrap_or(usize::MAX);
        if self.restart_log.len() >= budget {
            return false;
        }
        self.restart_log.push_back(now);
        true
    }

    /// The restart budget is spent: no more instances. Reports it once,
    /// ends the event stream, and answers every later call with `Down`.
    pub(super) fn go_down(&mut self, last_failure: String) {
        let limits = &self.config.limits;
        let reason = format!(
            "restart budget exhausted ({} restarts within {} s); the adapter stays down. Last failure: {last_failure}",
            limits.restart_budget,
            limits.restart_window.as_secs_f64(),
        );
        tracing::error!(error = %reason, "relay adapter down for good");
        // Down before the event: whoever reacts to it sees a down handle.
        let _ = self.down_flag.set(reason.clone());
        self.down = Some(reason.clone());
        self.emit_fatal("restart_budget_exhausted", reason, false);
        self.events = None;
        self.restart_at = None;
    }

    /// The Fatal text of a trap: the root cause first (`wasm trap:
    /// interrupt`, `forcing trap when growing memory to N bytes`, ...), then
    /// the guest's last stderr lines (a panic message), then the context
    /// with the wasm backtrace, which the length cap cuts first.
    pub(super) fn trap_message(&self, trap: &wasmtime::Error) -> String {
        let mut message = trap.root_cause().to_string();
        if let Some(live) = &self.live {
            let tail = live.store.data().stderr.tail();
            if !tail.is_empty() {
                message.push_str("; guest stderr: ");
                message.push_str(&tail.join(" | "));
            }
        }
        let details = format!("{trap:#}");
        if details != message {
            message.push_str("; ");
            message.push_str(&details);
        }
        truncate(&mut message, TRAP_MESSAGE_MAX_BYTES);
        message
    }

    /// The instance is poisoned: drop it and schedule a new one, if the
    /// restart budget allows; else the adapter goes down for good.
    pub(super) fn on_trap(&mut self, trap: wasmtime::Error) {
        let message = self.trap_message(&trap);
        let terminal = self
            .live
            .as_ref()
            .is_some_and(|live| live.store.data().terminal);
        self.drop_instance();
        if self.shutdown_requested || terminal {
            // Shutting down, or already disabled: a new instance would only
            // dial again (a revoked one would retry 4401 forever).
            tracing::error!(error = %message, "relay component trapped after it stopped for good; not restarting");
            self.emit_fatal("guest_trap", message, false);
            self.stopping = true;
        } else if self.restart_allowed() {
            tracing::error!(error = %message, "relay component trapped; restarting it");
            self.emit_fatal("guest_trap", message, true);
            self.schedule_restart();
        } else {
            tracing::error!(error = %message, "relay component trapped; restart budget spent");
            self.go_down(message);
        }
    }

    /// Closes the instance's sockets and drops it; its pending requests
    /// resolve as "relay adapter stopped" (their reply senders drop).
    pub(super) fn drop_instance(&mut self) {
        if let Some(mut live) = self.live.take() {
            self.metrics.instance_dropped();
            self.memory_peak = self
                .memory_peak
                .max(live.store.data().limiter.memory_bytes());
            self.call_peak_ticks = self.call_peak_ticks.max(live.store.data().peak_ticks);
            if live.started.elapsed() >= self.config.limits.restart_reset_after {
                self.backoff = self.config.limits.restart_initial;
            }
            super::close_all(live.store.data_mut(), 1011, "relay adapter restarting");
            self.forget_media(live.store.data_mut());
        }
        self.queue.clear();
        self.io_stash = None;
        self.deadline = None;
    }

    /// The files a lost instance downloaded may still be in the gateway's
    /// hands; no instance will delete them now, so they go after the
    /// retention period.
    fn forget_media(&self, host: &mut crate::store::HostState) {
        let (Some(client), Some(options)) = (&self.media.client, &self.config.media) else {
            return;
        };
        let paths: Vec<String> = host.media_written.drain().collect();
        if paths.is_empty() {
            return;
        }
        let client = client.clone();
        let retention = options.retention;
        tokio::spawn(async move {
            tokio::time::sleep(retention).await;
            client.delete(&paths);
        });
    }

    pub(super) fn schedule_restart(&mut self) {
        self.restart_at = Instant::now().checked_add(self.backoff);
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.config.limits.restart_max);
    }

    pub(super) fn emit_fatal(&self, code: &str, message: String, retryable: bool) {
        let Some(events) = &self.events else {
            return;
        };
        let _ = events.send(Event::Fatal {
            code: code.to_string(),
            message,
            retryable,
        });
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}
