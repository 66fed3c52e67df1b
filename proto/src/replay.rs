//! Anti-replay window per agent: the highest tick seen plus the tick/nonce
//! pairs of the last [`REPLAY_WINDOW`] ticks. Pure data; the receiver
//! persists it so a restart does not reopen the window.

use std::collections::VecDeque;

/// How far below the highest tick a message may still arrive (relays and
/// spooled deliveries reorder messages a little).
pub const REPLAY_WINDOW: u64 = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("tick {tick} is at or below the window floor {floor}")]
    TooOld { tick: u64, floor: u64 },
    #[error("tick {0} was already used")]
    TickReused(u64),
    #[error("nonce was already used")]
    NonceReused,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// (tick, nonce fingerprint) for ticks above `floor()`, ordered by
    /// tick. A receiver holds one window per agent, full after an hour of
    /// reports, so the layout is compact: 16 bytes a pair (the whole nonce
    /// took 24, a BTreeMap about 48). Ticks mostly arrive in order, so
    /// inserts are pushes at the back and pruning pops the front.
    seen: VecDeque<(u64, u64)>,
}

/// A 64-bit fingerprint of a nonce, for the reuse check. Two different
/// nonces in one window share a fingerprint with a chance of about
/// 120 / 2^64: a keyed hash (SipHash with fixed keys), so that nonces with
/// structure (a counter, a timestamp) spread as well as random ones.
fn fingerprint(nonce: &[u8; 16]) -> u64 {
    use std::hash::Hasher;
    #[allow(deprecated)] // SipHasher's algorithm is fixed; DefaultHasher's may change
    let mut h = std::hash::SipHasher::new_with_keys(0x6b61_7474_696c_6121, 0x6e6f_6e63_6573_2121);
    h.write(nonce);
    h.finish()
}

impl ReplayWindow {
    /// Rebuilds a window from persisted state.
    pub fn from_parts(highest: u64, seen: impl IntoIterator<Item = (u64, [u8; 16])>) -> Self {
        let mut pairs: Vec<(u64, u64)> =
            seen.into_iter().map(|(tick, nonce)| (tick, fingerprint(&nonce))).collect();
        pairs.sort_by_key(|(tick, _)| *tick);
        pairs.dedup_by_key(|(tick, _)| *tick);
        let mut w = ReplayWindow { highest, seen: pairs.into() };
        w.prune();
        w
    }

    fn position(&self, tick: u64) -> Result<usize, usize> {
        self.seen.binary_search_by_key(&tick, |(t, _)| *t)
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Ticks at or below this are refused.
    pub fn floor(&self) -> u64 {
        self.highest.saturating_sub(REPLAY_WINDOW)
    }

    /// Whether `(tick, nonce)` would be accepted. Does not record it.
    pub fn check(&self, tick: u64, nonce: &[u8; 16]) -> Result<(), ReplayError> {
        // A fresh window (highest 0) accepts tick 0 only once, via `seen`.
        if self.highest > 0 && tick <= self.floor() {
            return Err(ReplayError::TooOld { tick, floor: self.floor() });
        }
        if self.position(tick).is_ok() {
            return Err(ReplayError::TickReused(tick));
        }
        let nonce = fingerprint(nonce);
        if self.seen.iter().any(|(_, n)| *n == nonce) {
            return Err(ReplayError::NonceReused);
        }
        Ok(())
    }

    /// Records an accepted pair. Returns the ticks that fell out of the
    /// window, so a persistent copy can delete them too.
    pub fn record(&mut self, tick: u64, nonce: [u8; 16]) -> Vec<u64> {
        let nonce = fingerprint(&nonce);
        match self.position(tick) {
            Ok(i) => self.seen[i].1 = nonce,
            Err(i) => self.seen.insert(i, (tick, nonce)),
        }
        self.highest = self.highest.max(tick);
        self.prune()
    }

    fn prune(&mut self) -> Vec<u64> {
        if self.highest == 0 {
            return Vec::new();
        }
        let floor = self.floor();
        let mut dropped = Vec::new();
        while self.seen.front().is_some_and(|(tick, _)| *tick <= floor) {
            dropped.extend(self.seen.pop_front().map(|(tick, _)| tick));
        }
        dropped
    }

    /// The ticks inside the window.
    pub fn ticks(&self) -> impl Iterator<Item = u64> + '_ {
        self.seen.iter().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> [u8; 16] {
        [b; 16]
    }

    #[test]
    fn accepts_increasing_and_reordered_ticks() {
        let mut w = ReplayWindow::default();
        for t in [1, 2, 5, 4, 3] {
            w.check(t, &n(t as u8)).unwrap();
            w.record(t, n(t as u8));
        }
        assert_eq!(w.highest(), 5);
    }

    #[test]
    fn refuses_reused_tick_and_nonce() {
        let mut w = ReplayWindow::default();
        w.record(10, n(1));
        assert_eq!(w.check(10, &n(2)), Err(ReplayError::TickReused(10)));
        assert_eq!(w.check(11, &n(1)), Err(ReplayError::NonceReused));
        assert!(w.check(11, &n(2)).is_ok());
    }

    #[test]
    fn refuses_ticks_at_or_below_floor() {
        let mut w = ReplayWindow::default();
        w.record(500, n(1));
        assert_eq!(w.floor(), 380);
        assert!(matches!(w.check(380, &n(2)), Err(ReplayError::TooOld { .. })));
        assert!(w.check(381, &n(2)).is_ok());
    }

    #[test]
    fn window_is_pruned_and_rebuilt() {
        let mut w = ReplayWindow::default();
        w.record(1, n(1));
        let dropped = w.record(200, n(2));
        assert_eq!(dropped, vec![1]);
        let again = ReplayWindow::from_parts(200, [(200, n(2))]);
        assert_eq!(again, w);
        assert!(again.check(200, &n(9)).is_err());
    }

    #[test]
    fn reordered_ticks_stay_ordered_and_the_oldest_leave_first() {
        let mut w = ReplayWindow::default();
        let mut dropped = Vec::new();
        for t in [5, 3, 4, 200, 150, 81] {
            dropped.extend(w.record(t, n(t as u8)));
        }
        assert_eq!(w.ticks().collect::<Vec<_>>(), vec![81, 150, 200]);
        dropped.sort();
        assert_eq!(dropped, vec![3, 4, 5]);
        assert!(matches!(w.check(80, &n(99)), Err(ReplayError::TooOld { .. })));
        assert_eq!(w.check(150, &n(99)), Err(ReplayError::TickReused(150)));
        assert!(w.check(149, &n(99)).is_ok());
        let rebuilt = ReplayWindow::from_parts(200, [(150, n(150)), (81, n(81)), (200, n(200))]);
        assert_eq!(rebuilt, w);
    }

    /// Nonces with structure (a counter in a constant prefix, a counter in
    /// the high bytes) are told apart as well as random ones.
    #[test]
    fn structured_nonces_do_not_share_fingerprints() {
        let mut seen = std::collections::HashSet::new();
        for i in 0u64..50_000 {
            let mut low = [0xab; 16];
            low[8..].copy_from_slice(&i.to_be_bytes());
            let mut high = [0; 16];
            high[..8].copy_from_slice(&i.to_le_bytes());
            assert!(seen.insert(fingerprint(&low)) && seen.insert(fingerprint(&high)), "{i}");
        }
        let mut w = ReplayWindow::default();
        let mut a = [0; 16];
        a[15] = 1;
        w.record(1, a);
        let mut b = a;
        b[15] = 2;
        assert!(w.check(2, &b).is_ok(), "a nonce one bit apart is another nonce");
        assert_eq!(w.check(2, &a), Err(ReplayError::NonceReused));
    }
}
