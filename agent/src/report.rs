//! Turns collected telemetry into a signed report envelope. Real collection
//! and the simulator both produce [`Telemetry`]; everything after that is
//! shared.

use kattila_proto::model::{CollectError, Interface, Route, SystemInfo, WgDevice};
use kattila_proto::{signed_envelope, Kind, Psk, Report};

use crate::identity::{new_nonce, TickCounter};

/// What one collection cycle saw on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    pub hostname: String,
    pub system: SystemInfo,
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub wireguard: Vec<WgDevice>,
    pub errors: Vec<CollectError>,
}

/// The agent's version as reported to the receiver.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the unsigned report for `telemetry` observed at `observed_at`;
/// `timestamp`, `nonce` and `tick` are filled in by [`sign_report`], and
/// `site` is left for the caller (it is configuration, not telemetry).
pub fn build_report(agent_id: &str, observed_at: i64, telemetry: Telemetry) -> Report {
    Report {
        kind: Kind::Report,
        agent_id: agent_id.to_string(),
        timestamp: observed_at,
        nonce: String::new(),
        tick: 0,
        observed_at,
        hostname: telemetry.hostname,
        agent_version: AGENT_VERSION.to_string(),
        // Configuration, not telemetry: the caller sets it.
        site: None,
        system: telemetry.system,
        interfaces: telemetry.interfaces,
        routes: telemetry.routes,
        wireguard: telemetry.wireguard,
        errors: telemetry.errors,
        spool_dropped: 0,
    }
}

/// Stamps `report` for sending now (fresh timestamp, nonce and tick) and
/// signs it. Called at send time, also for reports that waited in a spool.
pub fn sign_report(
    report: &mut Report,
    psk: &Psk,
    ticks: &mut TickCounter,
    now: i64,
) -> anyhow::Result<Vec<u8>> {
    report.timestamp = now;
    // The protocol refuses observed_at after timestamp; if the clock stepped
    // back since collection, "now" is the latest moment this agent can vouch for.
    report.observed_at = report.observed_at.min(now);
    report.nonce = new_nonce();
    report.tick = ticks.next_tick()?;
    Ok(signed_envelope(psk, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kattila_proto::{verify, KeySet, Message, VerifyOptions};

    #[test]
    fn signed_report_verifies_and_keeps_observed_at() {
        let dir = tempfile::tempdir().unwrap();
        let mut ticks = TickCounter::open(dir.path().join("tick"), 1).unwrap();
        let psk = Psk::new("k").unwrap();
        let telemetry = Telemetry { hostname: "h".into(), ..Telemetry::default() };
        let mut report = build_report("abc", 1000, telemetry);
        let env = sign_report(&mut report, &psk, &mut ticks, 1500).unwrap();
        let v = verify(&env, &KeySet::new(psk.clone()), VerifyOptions::at(1500)).unwrap();
        let Message::Report(r) = v.message else { panic!() };
        assert_eq!((r.observed_at, r.timestamp, r.tick), (1000, 1500, 1));
        // Re-signing (a spooled report) takes a new tick and nonce.
        let nonce = report.nonce.clone();
        sign_report(&mut report, &psk, &mut ticks, 1600).unwrap();
        assert_eq!(report.tick, 2);
        assert_ne!(report.nonce, nonce);
    }

    #[test]
    fn a_clock_stepped_back_since_collection_still_signs_a_valid_report() {
        let dir = tempfile::tempdir().unwrap();
        let mut ticks = TickCounter::open(dir.path().join("tick"), 1).unwrap();
        let psk = Psk::new("k").unwrap();
        let mut report = build_report("abc", 2000, Telemetry::default());
        let env = sign_report(&mut report, &psk, &mut ticks, 1990).unwrap();
        let v = verify(&env, &KeySet::new(psk), VerifyOptions::at(1990)).unwrap();
        let Message::Report(r) = v.message else { panic!() };
        assert_eq!((r.observed_at, r.timestamp), (1990, 1990));
    }
}
