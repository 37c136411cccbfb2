//! Publishing an adapter's counters through the `metrics` facade.
//!
//! The actor refreshes them from the component's `stats` JSON (plus the
//! host's gauges) after the inputs it processes, at most every
//! [`REFRESH_MIN`], and every [`REFRESH_IDLE`] while idle; so no export call
//! is added per frame. Counters are published with `absolute`, carried over
//! a component restart (a fresh instance counts from zero). The outbound
//! latency histogram is recorded by the handle, where requests are issued
//! and complete. Without an installed recorder every call is a no-op.
//!
//! Every metric carries the label `adapter` (the id in the `relay_adapter`
//! tracing span, `relay-N`). The list is in `docs/operations.md#metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Least time between two refreshes while inputs keep arriving.
pub(crate) const REFRESH_MIN: Duration = Duration::from_millis(250);
/// Refresh cadence while no input arrives.
pub(crate) const REFRESH_IDLE: Duration = Duration::from_secs(1);

/// Outbound latency: handle request to completion, seconds, label `op`.
pub(crate) const OUTBOUND_LATENCY: &str = "relay_outbound_latency_seconds";

/// Counters: (stats key, metric name, help).
const COUNTERS: &[(&str, &str, &str)] = &[
    ("dials", "relay_dials_total", "WebSocket dials made."),
    (
        "reconnects",
        "relay_reconnects_total",
        "Dials after the first one.",
    ),
    (
        "unauthorized",
        "relay_unauthorized_total",
        "4401 closes and upgrade refusals seen.",
    ),
    ("acks", "relay_acks_total", "inbound_ack frames sent."),
    (
        "media_downloads",
        "relay_media_downloads_total",
        "Media downloads asked of the host (redirect hops included).",
    ),
    (
        "media_uploads",
        "relay_media_uploads_total",
        "Media uploads asked of the host.",
    ),
    (
        "media_failures",
        "relay_media_failures_total",
        "Inbound attachments not localised, and failed uploads.",
    ),
    (
        "dedupe_hits",
        "relay_dedupe_hits_total",
        "Replayed inbound messages dropped by dedupe.",
    ),
    (
        "deliveries",
        "relay_deliveries_total",
        "Messages handed to the gateway.",
    ),
    (
        "timeouts",
        "relay_outbound_timeouts_total",
        "Outbound requests that timed out waiting for outbound_result.",
    ),
    (
        "route_misses",
        "relay_route_misses_total",
        "Outbound actions to a chat whose route the routing cache had evicted (sent without routing keys, logged as a warning).",
    ),
    (
        "restarts",
        "relay_guest_restarts_total",
        "Re-instantiations of the component after a trap.",
    ),
];

/// Counters whose stats value is an object by label: (stats key, metric
/// name, label name, help).
const LABELLED: &[(&str, &str, &str, &str)] = &[
    (
        "frames_in",
        "relay_frames_in_total",
        "type",
        "Frames received from the connector, by frame type.",
    ),
    (
        "frames_out",
        "relay_frames_out_total",
        "type",
        "Frames sent to the connector, by frame type.",
    ),
    (
        "skipped",
        "relay_skipped_lines_total",
        "reason",
        "Inbound lines skipped, by reason.",
    ),
];

/// Gauges: (stats key, metric name, scale, help).
const GAUGES: &[(&str, &str, f64, &str)] = &[
    (
        "pending",
        "relay_pending",
        1.0,
        "Callers' outbound requests awaiting a result.",
    ),
    (
        "pending_background",
        "relay_pending_background",
        1.0,
        "Best-effort frames (processing reactions, typing clears) awaiting a result.",
    ),
    (
        "undelivered",
        "relay_undelivered",
        1.0,
        "Deliveries awaiting the gateway's accept or reject.",
    ),
    ("routes", "relay_routes", 1.0, "Chats in the routing cache."),
    (
        "media_files",
        "relay_media_files",
        1.0,
        "Downloaded media files kept (awaiting a verdict or within retention).",
    ),
    (
        "media_bytes",
        "relay_media_bytes",
        1.0,
        "Bytes of downloaded media files kept.",
    ),
    (
        "route_pins",
        "relay_route_pins",
        1.0,
        "Chats whose route is pinned (a delivery awaits its verdict, a request its result, or a caller its admission).",
    ),
    (
        "admission_waiting",
        "relay_admission_waiting",
        1.0,
        "Callers waiting for a request slot (max_pending requests await their results).",
    ),
    (
        "seen",
        "relay_seen_keys",
        1.0,
        "Keys in the replay dedupe memory.",
    ),
    (
        "guest_memory_bytes",
        "relay_guest_memory_bytes",
        1.0,
        "Linear memory of the live component instance.",
    ),
    (
        "guest_memory_peak_bytes",
        "relay_guest_memory_peak_bytes",
        1.0,
        "Highest linear memory of any instance of this adapter.",
    ),
    (
        "memory_limit_bytes",
        "relay_guest_memory_limit_bytes",
        1.0,
        "Linear memory cap of the component.",
    ),
    (
        "read_held_bytes",
        "relay_read_held_bytes",
        1.0,
        "Bytes read from the connector and not yet taken by the component (bounded: the reader pauses at its budget).",
    ),
    (
        "guest_call_max_ms",
        "relay_guest_call_max_seconds",
        0.001,
        "Longest export call of any instance of this adapter.",
    ),
];

/// Registers the descriptions with the installed recorder (if any).
pub(crate) fn describe() {
    for (_, name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
    }
    for (_, name, _, help) in LABELLED {
        metrics::describe_counter!(*name, *help);
    }
    for (_, name, _, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    metrics::describe_histogram!(
        OUTBOUND_LATENCY,
        metrics::Unit::Seconds,
        "Time from an AdapterHandle request (send, edit, typing, follow_up, raw_action, \
         get_chat_info, and the lanes that send a frame) to its completion."
    );
}

/// Records one outbound request's latency.
pub(crate) fn record_latency(adapter: &str, op: &'static str, elapsed: Duration) {
    metrics::histogram!(OUTBOUND_LATENCY, "adapter" => adapter.to_string(), "op" => op)
        .record(elapsed.as_secs_f64());
}

/// (metric name, label name, label value); label name "" for none.
type Key = (&'static str, &'static str, String);

/// One adapter's published counters: what earlier instances counted, and the
/// latest values of the live one.
#[derive(Debug, Default)]
pub(crate) struct Exporter {
    carried: BTreeMap<Key, u64>,
    current: BTreeMap<Key, u64>,
}

impl Exporter {
    /// The live instance is gone: its last known counts are carried over.
    /// (What it counted since the last refresh is lost.)
    pub(crate) fn instance_dropped(&mut self) {
        for (key, value) in std::mem::take(&mut self.current) {
            // `restarts` comes from the host, not the instance.
            if key.0 == "relay_guest_restarts_total" {
                continue;
            }
            *self.carried.entry(key).or_default() += value;
        }
    }

    /// Publishes `stats` (the `AdapterHandle::stats` object; the host's
    /// gauges alone when no instance is live).
    pub(crate) fn publish(&mut self, adapter: &str, stats: &serde_json::Map<String, Value>) {
        let number = |key: &str| stats.get(key).and_then(Value::as_u64);
        for (key, name, _) in COUNTERS {
            if let Some(v) = number(key) {
                self.current.insert((name, "", String::new()), v);
            }
        }
        for (key, name, label, _) in LABELLED {
            if let Some(Value::Object(by)) = stats.get(*key) {
                for (value, count) in by {
                    if let Some(count) = count.as_u64() {
                        self.current.insert((name, label, value.clone()), count);
                    }
                }
            }
        }
        let mut keys: Vec<&Key> = self.current.keys().collect();
        keys.extend(self.carried.keys());
        keys.sort();
        keys.dedup();
        for key in keys {
            let total = self.current.get(key).copied().unwrap_or(0)
                + self.carried.get(key).copied().unwrap_or(0);
            let (name, label, value) = key;
            if label.is_empty() {
                metrics::counter!(*name, "adapter" => adapter.to_string()).absolute(total);
            } else {
                metrics::counter!(*name, "adapter" => adapter.to_string(), *label => value.clone())
                    .absolute(total);
            }
        }
        for (key, name, scale, _) in GAUGES {
            // A missing component figure (no live instance) is 0.
            let v = number(key).unwrap_or(0);
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(*name, "adapter" => adapter.to_string()).set(v as f64 * scale);
        }
    }
}
