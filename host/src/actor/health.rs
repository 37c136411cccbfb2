//! Health and metrics: the host's figures (guest memory, longest call,
//! restarts, admission waiters) next to the component's `stats`, answered
//! also while no instance is live, and published through the `metrics`
//! facade at a bounded rate.

use tokio::time::Instant;

use super::Actor;
use crate::messages::{Answer, Query};
use crate::metrics::REFRESH_MIN;
use crate::types::{Health, State};

impl Actor {
    /// Publishes the counters and gauges (no-op without a `metrics`
    /// recorder), unless they were refreshed less than [`REFRESH_MIN`] ago
    /// and `force` is false. One `stats` export call when an instance is live.
    pub(super) async fn refresh_metrics(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(self.metrics_at) < REFRESH_MIN {
            return;
        }
        self.metrics_at = now;
        let mut stats = None;
        if self.live.is_some()
            && let Ok(Answer::Text(Some(text))) = self.query(Query::Stats).await
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text)
        {
            stats = Some(map);
        }
        let stats = stats.unwrap_or_else(|| {
            let mut map = serde_json::Map::new();
            self.insert_host_gauges(&mut map);
            map
        });
        self.metrics.publish(&self.label, &stats);
    }

    /// The host's figures of a stats answer.
    pub(super) fn insert_host_gauges(
        &self,
        stats: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        let health = self.health(None, None);
        stats.insert(
            "guest_memory_bytes".into(),
            health.guest_memory_bytes.into(),
        );
        stats.insert(
            "guest_memory_peak_bytes".into(),
            health.guest_memory_peak_bytes.into(),
        );
        stats.insert(
            "memory_limit_bytes".into(),
            health.memory_limit_bytes.into(),
        );
        stats.insert("guest_call_max_ms".into(), health.guest_call_max_ms.into());
        stats.insert("restarts".into(), health.restarts.into());
        stats.insert("admission_waiting".into(), self.admission.waiting().into());
        stats.insert("read_held_bytes".into(), self.io_tx.held_bytes().into());
    }

    /// Linear memory of the live instance (0 without one).
    pub(super) fn memory_now(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |live| live.store.data().limiter.memory_bytes())
    }

    /// The host's health figures, with the component's `state` and stats
    /// JSON when a live instance answered.
    pub(super) fn health(&self, state: Option<State>, guest: Option<&serde_json::Value>) -> Health {
        let count = |key: &str| {
            guest
                .and_then(|g| g.get(key))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let now = self.memory_now();
        let call_ticks = self
            .live
            .as_ref()
            .map_or(0, |live| live.store.data().peak_ticks)
            .max(self.call_peak_ticks);
        Health {
            guest_call_max_ms: call_ticks,
            state,
            pending: count("pending"),
            undelivered: count("undelivered"),
            guest_memory_bytes: now,
            guest_memory_peak_bytes: self.memory_peak.max(now),
            memory_limit_bytes: self.config.limits.memory_bytes,
            restarts: self.instances.saturating_sub(1),
            down: self.down.clone(),
        }
    }

    /// Adds the host's gauges to a stats answer (`is_stats`) or completes a
    /// health answer; other answers pass through.
    pub(super) fn with_host_gauges(&self, answer: Answer, is_stats: bool) -> Answer {
        match answer {
            Answer::Text(Some(text)) if is_stats => {
                let Ok(serde_json::Value::Object(mut stats)) = serde_json::from_str(&text) else {
                    return Answer::Text(Some(text));
                };
                self.insert_host_gauges(&mut stats);
                Answer::Text(Some(serde_json::Value::Object(stats).to_string()))
            }
            Answer::Guest(state, stats) => {
                let stats = serde_json::from_str::<serde_json::Value>(&stats).ok();
                Answer::Health(self.health(Some(state), stats.as_ref()))
            }
            other => other,
        }
    }
}
