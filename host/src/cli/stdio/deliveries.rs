//! The bridge's delivery table: numbers unique for the life of the process
//! (a component restart starts its own numbering again; the gateway never
//! sees that), each holding its [`DeliveryAck`] until the gateway answers.
//! An unanswered delivery counts against `max_undelivered` exactly as in
//! the library, so a slow gateway makes the connector buffer.

use std::collections::{BTreeSet, HashMap};

use relay_host::DeliveryAck;

/// Most stale numbers remembered for a precise "stale delivery" error;
/// older ones get "already answered or stale".
const STALE_MEMORY: usize = 1 << 16;

/// Outstanding deliveries by bridge number.
#[derive(Debug, Default)]
pub struct Deliveries {
    next: u64,
    open: HashMap<u64, DeliveryAck>,
    /// Numbers whose component instance was replaced before an answer.
    stale: BTreeSet<u64>,
    /// Stale numbers below this were forgotten ([`STALE_MEMORY`]).
    forgotten_below: u64,
}

impl Deliveries {
    /// Registers a delivery; returns the number the gateway answers with.
    pub fn insert(&mut self, ack: DeliveryAck) -> u64 {
        self.next += 1;
        self.open.insert(self.next, ack);
        self.next
    }

    /// The component instance was lost: its deliveries can no longer be
    /// answered (the connector replays what was not accepted).
    pub fn instance_lost(&mut self) {
        for (number, ack) in self.open.drain() {
            // The instance is gone; the verdict reaches nobody.
            drop(ack);
            self.stale.insert(number);
        }
        while self.stale.len() > STALE_MEMORY {
            if let Some(oldest) = self.stale.pop_first() {
                self.forgotten_below = oldest + 1;
            }
        }
    }

    /// Answers delivery `number`.
    pub fn answer(&mut self, number: u64, accept: bool) -> Result<(), String> {
        if let Some(ack) = self.open.remove(&number) {
            if accept {
                ack.accept();
            } else {
                ack.reject();
            }
            return Ok(());
        }
        if number == 0 || number > self.next {
            Err(format!("unknown delivery {number}"))
        } else if self.stale.remove(&number) {
            Err(format!(
                "stale delivery {number}: its component instance was replaced \
                 (the connector replays what was not accepted)"
            ))
        } else if number < self.forgotten_below {
            Err(format!(
                "delivery {number} was already answered or is stale"
            ))
        } else {
            Err(format!("delivery {number} was already answered"))
        }
    }

    /// Deliveries awaiting an answer.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}
