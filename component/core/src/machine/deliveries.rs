//! Deliveries (spec §2.4, §2.5, §6.2, §6.17): admission of inbound events,
//! replay dedupe, duplicates of a delivery awaiting its verdict, acks after
//! accept, and the overload path (`going_idle`, then a drain re-dial).

use std::collections::VecDeque;

use super::*;

#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub(super) key: Option<String>,
    /// The chat whose route this delivery pins until its verdict.
    pub(super) chat_id: String,
    pub(super) buffer_id: Option<String>,
    pub(super) conn: u32,
    /// Duplicates that arrived while this delivery awaited its verdict.
    pub(super) duplicates: Vec<(u32, Option<String>)>,
    /// The event of the first buffered duplicate: delivered in this one's
    /// place if the gateway rejects it (the connector would otherwise keep
    /// it until the next connection).
    pub(super) parked: Option<Box<MessageEvent>>,
}

/// What the delivery path owns.
#[derive(Debug)]
pub(super) struct Deliveries {
    /// Keys of accepted deliveries (replay dedupe).
    pub(super) seen: BoundedSet,
    /// Deliveries awaiting the gateway's verdict.
    pub(super) in_flight: FxHashMap<u64, InFlight>,
    /// The delivery that owns each dedupe key while it awaits its verdict.
    pub(super) key_owner: KeyedMap<String, u64>,
    pub(super) next_delivery: u64,
    /// Routes of accepted deliveries still held for their reply: a gateway
    /// usually starts the reply after it accepts (a spawned task, a queue),
    /// and until the request pins the route nothing else would. Oldest
    /// first, at most `route_capacity`; an entry whose hold a request has
    /// taken over is skipped when it rolls off.
    pub(super) reply_holds: VecDeque<String>,
    /// Live holds per chat (the entries above not yet taken over).
    pub(super) held: KeyedMap<String, u32>,
}

impl Deliveries {
    pub(super) fn new(seen_capacity: usize) -> Deliveries {
        Deliveries {
            seen: BoundedSet::new(seen_capacity),
            in_flight: FxHashMap::default(),
            key_owner: KeyedMap::default(),
            next_delivery: 1,
            reply_holds: VecDeque::new(),
            held: KeyedMap::default(),
        }
    }
}

impl Machine {
    /// Acks a buffered delivery that arrived on `conn`. A `bufferId` names
    /// an entry of the connector's per-instance buffer, not of one
    /// connection (§2.5: acks are idempotent connector-side), so a verdict
    /// given after a re-dial is acked on the current connection once it is
    /// ready: otherwise every delivery accepted across a re-dial (the
    /// overload drain re-dials on purpose) comes back as a replay, and past
    /// `seen_capacity` as a duplicate.
    pub(super) fn ack(&mut self, conn: u32, buffer_id: String) {
        let target = match self.link.phase {
            Phase::Ready { conn: live, .. } => Some(live),
            Phase::Handshaking { conn: live, .. } if live == conn => Some(live),
            _ => None,
        };
        if let Some(live) = target {
            self.stats.acks += 1;
            self.send_frame(live, &GatewayFrame::InboundAck { buffer_id }, None);
        }
    }

    pub(super) fn admit(
        &mut self,
        now: Now,
        conn: u32,
        mut event: MessageEvent,
        buffer_id: Option<String>,
        key: Option<String>,
    ) {
        let t = now.mono_ns;
        if let Some(k) = &key {
            if self.deliveries.seen.contains(k) {
                self.stats.dedupe_hits += 1;
                self.log(
                    Level::Info,
                    format!("relay inbound dropped as replay: {}", truncate(k, 128)),
                );
                if let Some(b) = buffer_id {
                    self.ack(conn, b);
                }
                return;
            }
            if let Some(owner) = self.deliveries.key_owner.get(k).copied()
                && let Some(f) = self.deliveries.in_flight.get_mut(&owner)
            {
                self.stats.dedupe_hits += 1;
                // Only buffered copies need an answer (an ack once the owner
                // is accepted); a few per key is plenty, the rest are replayed.
                if let Some(b) = buffer_id
                    && f.duplicates.len() < MAX_DUPLICATES_PER_KEY
                    && !f
                        .duplicates
                        .iter()
                        .any(|(c, d)| *c == conn && d.as_deref() == Some(&b))
                {
                    f.duplicates.push((conn, Some(b)));
                    if f.parked.is_none() {
                        f.parked = Some(Box::new(event));
                    }
                }
                return;
            }
        }
        // Step 4 (§6.2): a prompt answer is consumed, never delivered; it
        // is admitted at once (seen, and acked when buffered).
        if event.prompt_response.is_some() {
            self.routes.capture(&event);
            self.stamp_session_thread(&mut event);
            if self.consume_prompt_answer(now, &event) {
                if let Some(k) = key {
                    self.deliveries.seen.insert(k);
                }
                if let Some(b) = buffer_id {
                    self.ack(conn, b);
                }
                return;
            }
        }
        // Live frames before the connector's answer to `going_idle` are the
        // flip window; after an ack, or once it went unanswered, they mean
        // the connector ignores it.
        let connector_ignores_idle = self.idle.overload || self.idle.timed_out_on == Some(conn);
        if connector_ignores_idle
            && self.deliveries.in_flight.len() >= self.cfg.max_undelivered.saturating_mul(2).max(2)
        {
            // The connector ignores `going_idle` and the gateway is far
            // behind: close so the connector buffers, rather than grow.
            self.log(
                Level::Warn,
                "relay gateway far behind and the connector keeps sending; closing to shed load",
            );
            self.close(conn, CLOSE_TRY_AGAIN_LATER, "gateway overloaded");
            self.socket_lost(now, conn, CLOSE_TRY_AGAIN_LATER, "gateway overloaded", true);
            return;
        }
        if self.deliveries.in_flight.len() >= self.cfg.max_undelivered {
            self.request_overload_idle(t, conn);
            if buffer_id.is_some() {
                // The connector keeps it and replays it once we have caught up.
                self.log(
                    Level::Warn,
                    "relay buffered inbound left unacked: gateway overloaded",
                );
                return;
            }
        }
        self.stamp_session_thread(&mut event);
        // The reply to this message needs the route: keep it until the
        // gateway's verdict (a reply made before then is pending and pins
        // it on its own).
        self.routes.capture_pinned(&event);
        let delivery = self.deliveries.next_delivery;
        self.deliveries.next_delivery += 1;
        if let Some(k) = &key {
            self.deliveries.key_owner.insert(k.clone(), delivery);
        }
        self.deliveries.in_flight.insert(
            delivery,
            InFlight {
                key,
                chat_id: event.source.chat_id.clone(),
                buffer_id: buffer_id.clone(),
                conn,
                duplicates: Vec::new(),
                parked: None,
            },
        );
        self.stats.deliveries += 1;
        self.deliver_event(now, delivery, buffer_id, event);
    }

    pub(super) fn on_verdict(&mut self, now: Now, delivery: u64, accepted: bool) {
        let Some(f) = self.deliveries.in_flight.remove(&delivery) else {
            self.log(
                Level::Debug,
                format!("relay verdict for unknown delivery {delivery}"),
            );
            return;
        };
        if let Some(k) = &f.key {
            self.deliveries.key_owner.remove(k);
        }
        self.media_verdict(now, delivery, accepted);
        if !accepted {
            self.routes.unpin(&f.chat_id);
            self.readmit_parked(now, f);
            return;
        }
        // The delivery's pin becomes a hold for the reply.
        self.hold_for_reply(f.chat_id.clone());
        if let Some(b) = f.buffer_id {
            self.ack(f.conn, b);
        }
        for (conn, b) in f.duplicates {
            if let Some(b) = b {
                self.ack(conn, b);
            }
        }
        if let Some(k) = f.key {
            self.deliveries.seen.insert(k);
        }
    }

    /// Keeps `chat`'s route pinned after its delivery was accepted, until a
    /// request to it takes over the pin or `route_capacity` later accepts
    /// roll it off.
    fn hold_for_reply(&mut self, chat: String) {
        *self.deliveries.held.entry(chat.clone()).or_default() += 1;
        self.deliveries.reply_holds.push_back(chat);
        while self.deliveries.reply_holds.len() > self.cfg.route_capacity.max(1) {
            if let Some(old) = self.deliveries.reply_holds.pop_front() {
                self.release_reply_hold(&old);
            }
        }
    }

    /// Releases one live hold on `chat`, if it has one (a request to it now
    /// pins the route, or the hold rolled off). Returns whether it had one.
    pub(super) fn release_reply_hold(&mut self, chat: &str) -> bool {
        let Some(count) = self.deliveries.held.get_mut(chat) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.deliveries.held.remove(chat);
        }
        self.routes.unpin(chat);
        true
    }

    /// Live reply holds (for the statistics).
    pub(super) fn reply_holds(&self) -> usize {
        self.deliveries.held.values().map(|&n| n as usize).sum()
    }

    /// The owner was rejected: its first parked buffered duplicate is
    /// delivered now as a delivery of its own, and the other parked copies
    /// wait on it, as they waited on the owner.
    fn readmit_parked(&mut self, now: Now, rejected: InFlight) {
        let InFlight {
            key,
            mut duplicates,
            parked,
            ..
        } = rejected;
        let Some(event) = parked else {
            return;
        };
        if duplicates.is_empty() {
            return;
        }
        let (conn, buffer_id) = duplicates.remove(0);
        // The copy may have come on a connection that is gone since (in
        // flight deliveries survive re-dials): admission decisions (going
        // idle, shedding load) concern the live one. Its ack goes to the
        // live connection anyway.
        let conn = self.live_conn().unwrap_or(conn);
        let rest = (!duplicates.is_empty()).then(|| event.clone());
        self.admit(now, conn, *event, buffer_id, key.clone());
        let owner = key
            .as_ref()
            .and_then(|k| self.deliveries.key_owner.get(k).copied());
        if let Some(f) = owner.and_then(|o| self.deliveries.in_flight.get_mut(&o)) {
            f.duplicates.extend(duplicates);
            // Still parked behind the new owner, should it be rejected too.
            if f.parked.is_none() {
                f.parked = rest;
            }
        }
        // Not admitted (overloaded): the connector keeps them and replays.
    }

    pub(super) fn request_overload_idle(&mut self, t: u64, conn: u32) {
        if self.idle.overload || self.idle.wait.is_some() || self.idle.shutdown.is_some() {
            return;
        }
        if let Phase::Ready { .. } = self.link.phase {
            self.log(
                Level::Warn,
                format!(
                    "relay gateway has {} undelivered messages; asking the connector to buffer",
                    self.deliveries.in_flight.len()
                ),
            );
            self.send_frame(conn, &GatewayFrame::GoingIdle, None);
            self.idle.wait = Some(IdleWait {
                purpose: IdlePurpose::Overload,
                deadline: t.saturating_add(ms(self.cfg.going_idle_timeout_ms)),
            });
        }
    }

    /// Once overloaded-and-idle and caught up, re-dial to drain the replay.
    pub(super) fn maybe_leave_overload(&mut self, now: Now) {
        if !self.idle.overload
            || self.deliveries.in_flight.len() > self.cfg.max_undelivered / 2
            || !self.outbound.pending.is_empty()
            || self.idle.shutdown.is_some()
            || self.idle.wait.is_some()
            || self.link.hold_until.is_some()
        {
            return;
        }
        if let Phase::Ready { conn, .. } = self.link.phase {
            self.log(
                Level::Info,
                "relay caught up; re-dialing to drain the connector's buffer",
            );
            self.close(conn, CLOSE_NORMAL, "draining replay");
            self.idle.overload = false;
            self.receive.decoder.reset();
            self.dial(now);
            // A re-dial of our own making is no outage: requests made before
            // it opens wait for it (bounded by their timeout) instead of
            // failing as "not connected".
            self.idle.drain_redial = true;
        }
    }
}
