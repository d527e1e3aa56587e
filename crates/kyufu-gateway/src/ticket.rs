//! Waiting-room tickets: signed (`kyufu_admission::Purpose::Ticket`), opaque to the visitor, and
//! carrying everything the gateway needs: the event, the visitor's sequence number, when it was
//! issued and the earliest time the next poll is worth answering in full.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Event id.
    pub ev: String,
    /// Sequence number: the visitor's place in line.
    pub seq: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Earliest next full refresh, Unix seconds.
    pub nxt: u64,
}
