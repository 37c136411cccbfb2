//! Counters and gauges, for health and metrics.

use super::*;

/// Counters and gauges, for health and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Frames received, by type.
    pub frames_in: BTreeMap<&'static str, u64>,
    /// Frames sent, by type.
    pub frames_out: BTreeMap<&'static str, u64>,
    /// Lines skipped, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Dials made.
    pub dials: u64,
    /// Dials after the first.
    pub reconnects: u64,
    /// 4401 closes and upgrade refusals seen.
    pub unauthorized: u64,
    /// `inbound_ack` frames sent.
    pub acks: u64,
    /// Replays dropped by dedupe.
    pub dedupe_hits: u64,
    /// Deliveries handed to the gateway.
    pub deliveries: u64,
    /// Callers' outbound requests awaiting a result (gauge; at most
    /// `max_pending`).
    pub pending: usize,
    /// Best-effort frames no caller waits for (processing reactions, the
    /// typing clear after an interrupt) awaiting a result (gauge; at most
    /// `max_pending`, on their own bound).
    pub pending_background: usize,
    /// Deliveries awaiting a verdict (gauge).
    pub undelivered: usize,
    /// Chats in the routing cache (gauge).
    pub routes: usize,
    /// Keys in the replay dedupe set (gauge).
    pub seen: usize,
    /// Outbound requests that timed out.
    pub timeouts: u64,
    /// Outbound actions to a chat whose route was evicted (sent without
    /// routing keys, with a warning).
    pub route_misses: u64,
    /// Chats whose route is pinned by a delivery, a pending request, a
    /// caller awaiting admission or an accepted delivery awaiting its
    /// reply (gauge).
    pub route_pins: usize,
    /// Accepted deliveries whose route is held for the reply (gauge; at
    /// most `route_capacity`).
    pub reply_holds: usize,
    /// Media downloads issued (redirect hops included).
    pub media_downloads: u64,
    /// Media uploads issued.
    pub media_uploads: u64,
    /// Attachments not localised and uploads that failed.
    pub media_failures: u64,
    /// Downloaded files kept (gauge).
    pub media_files: usize,
    /// Bytes of downloaded files kept (gauge).
    pub media_bytes: u64,
}

/// Counters by constant label, for the per-frame statistics: a short list
/// searched by address first (labels are `'static` constants), so counting
/// a frame compares no strings; by text only if the address is new.
#[derive(Debug, Clone, Default)]
pub(super) struct LabelCounts(Vec<(&'static str, u64)>);

impl LabelCounts {
    pub(super) fn bump(&mut self, label: &'static str) {
        let at = self
            .0
            .iter()
            .position(|(l, _)| std::ptr::eq(*l, label))
            .or_else(|| self.0.iter().position(|(l, _)| *l == label));
        match at {
            Some(i) => self.0[i].1 += 1,
            None => self.0.push((label, 1)),
        }
    }

    pub(super) fn to_map(&self) -> BTreeMap<&'static str, u64> {
        let mut map = BTreeMap::new();
        for (label, n) in &self.0 {
            *map.entry(*label).or_default() += n;
        }
        map
    }
}
