//! The one retry policy: what becomes of a message the receiver did not
//! commit — kept for a later attempt, or dropped because no attempt will
//! ever pass. The agent's delivery (spool or drop) and the simulator's
//! counts (unreachable or refused) both read it from here; a failed push
//! gives its verdict with `PushError::verdict`.

/// Why a message was not committed, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No answer, or trouble at the receiver or on the way to it (5xx): the
    /// same message can pass later or by another path.
    Unavailable,
    /// Refused for the key or the clock (401): passes once the keys or the
    /// clocks agree again (a key rotation reaching both ends, a clock fix).
    NotYet,
    /// Refused for what the message is (400, 413, 409, …): it never passes.
    Never,
}

impl Verdict {
    /// The verdict on a non-2xx HTTP answer.
    pub fn of_status(status: u16) -> Verdict {
        match status {
            500.. => Verdict::Unavailable,
            401 => Verdict::NotYet,
            _ => Verdict::Never,
        }
    }

    /// Whether the message stays in (or goes to) the spool.
    pub fn keep_for_later(self) -> bool {
        self != Verdict::Never
    }
}

/// Whether a report refused with `status` stays in (or goes to) the spool:
/// refusals for the key or the clock (401) and receiver trouble (5xx) can
/// pass; malformed reports (400, 413) never will.
pub fn keep_for_later(status: u16) -> bool {
    Verdict::of_status(status).keep_for_later()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_the_clock_and_receiver_trouble_are_worth_keeping() {
        for (status, verdict) in [
            (400, Verdict::Never),
            (401, Verdict::NotYet),
            (408, Verdict::Never),
            (409, Verdict::Never),
            (413, Verdict::Never),
            (500, Verdict::Unavailable),
            (502, Verdict::Unavailable),
            (503, Verdict::Unavailable),
        ] {
            assert_eq!(Verdict::of_status(status), verdict, "{status}");
            assert_eq!(keep_for_later(status), verdict != Verdict::Never, "{status}");
        }
    }
}
