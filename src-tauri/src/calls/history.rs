//! Call history: an entry per call (updated with its duration when an
//! accepted call ends), at most [`HISTORY_LIMIT`] of them, newest first;
//! and the recent peers it gives for presence.

use callinvite_client::InvitationId;

use super::{Calls, Direction};
use crate::store::HistoryEntry;

/// Most history entries kept.
pub const HISTORY_LIMIT: usize = 200;

impl Calls {
    /// Puts a call at the top of the history (in place of an entry with the
    /// same invitation), keeping at most [`HISTORY_LIMIT`].
    pub(super) fn record(
        &mut self,
        id: Option<&InvitationId>,
        direction: Direction,
        peer: &str,
        at_ms: u64,
        outcome: &str,
        missed: bool,
    ) {
        let id = id
            .map(|i| i.0.clone())
            .unwrap_or_else(|| format!("local-{at_ms}"));
        self.history.retain(|h| h.id != id);
        self.history.insert(
            0,
            HistoryEntry {
                id,
                direction: if direction == Direction::Outgoing {
                    "outgoing".into()
                } else {
                    "incoming".into()
                },
                peer: peer.to_owned(),
                at_ms,
                outcome: outcome.to_owned(),
                duration_s: None,
                missed,
            },
        );
        self.history.truncate(HISTORY_LIMIT);
    }

    /// Up to `max` recent peers, newest first, for presence and the contact list.
    pub fn recent_peers(&self, max: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for h in &self.history {
            if !seen.contains(&h.peer) && Some(&h.peer) != self.me.as_ref() {
                seen.push(h.peer.clone());
                if seen.len() == max {
                    break;
                }
            }
        }
        seen
    }
}
