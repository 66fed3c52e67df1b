//! What a notification says, before a channel renders it: the stable JSON
//! body of the generic webhook (`templates/api/schema/notification.schema.json`),
//! stored in the outbox as decided. A channel gets it with the dashboard
//! link added and, unless the channel is private, every address in its
//! text replaced: a message carries only what the published dashboard may
//! show.

use serde::{Deserialize, Serialize};

/// The `schema` member of every message; a new major version is a new name.
pub const SCHEMA: &str = "kattila.notification.v1";

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub schema: String,
    /// The same for every channel and every retry of one event: a receiver
    /// that has seen it may drop the message.
    pub idempotency_key: String,
    /// "raised", "resolved", "repeat" (still active) or "test".
    pub event: String,
    pub subject: Subject,
    /// One line: what happened where.
    pub title: String,
    pub text: String,
    pub first_seen: i64,
    pub resolved_at: Option<i64>,
    /// When this message was decided (Unix seconds).
    pub at: i64,
    /// The dashboard page, when `public_url` is configured.
    pub url: Option<String>,
}

/// What a message is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// "alarm", "incident" or "test".
    #[serde(rename = "type")]
    pub type_: String,
    /// The subject's name across raise, repeats and resolve.
    pub key: String,
    /// Alarm kind (peer_stale, …) or incident kind (site_silent, …).
    pub kind: String,
    pub severity: String,
    pub site: String,
    pub agents: Vec<AgentRef>,
    /// What inside the agent an alarm is about ("" for the agent, or an
    /// incident).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRef {
    pub agent_id: String,
    pub hostname: String,
}

impl Message {
    /// A test message for `channel`.
    pub fn test(channel: &str, now: i64) -> Message {
        Message {
            schema: SCHEMA.into(),
            idempotency_key: format!("test-{channel}-{now}"),
            event: "test".into(),
            subject: Subject {
                type_: "test".into(),
                key: "test".into(),
                kind: "test".into(),
                severity: "info".into(),
                site: String::new(),
                agents: Vec::new(),
                detail: String::new(),
            },
            title: format!("Kattila test message for channel {channel}"),
            text: "If you read this, the channel works.".into(),
            first_seen: now,
            resolved_at: None,
            at: now,
            url: None,
        }
    }

    /// The message as `private` or public channel may carry it, with the
    /// link to the dashboard page under `public_url`.
    pub fn for_channel(&self, private: bool, public_url: Option<&str>) -> Message {
        let mut m = self.clone();
        m.url = public_url.map(|base| {
            let page = if m.subject.type_ == "alarm" { "alarms.html" } else { "index.html" };
            format!("{base}/{page}")
        });
        if !private {
            for s in [&mut m.title, &mut m.text, &mut m.subject.site, &mut m.subject.detail] {
                *s = scrub(s);
            }
            for a in &mut m.subject.agents {
                a.hostname = scrub(&a.hostname);
            }
        }
        m
    }

    /// The message with event `event` and its key, decided `at`.
    pub fn retold(&self, event: &str, key: String, at: i64) -> Message {
        let mut m = self.clone();
        m.event = event.to_string();
        m.idempotency_key = key;
        m.at = at;
        let title = self.title.trim_start_matches("STILL ACTIVE: ").to_string();
        m.title = match event {
            "resolved" => format!("RESOLVED: {title}"),
            "repeat" => format!("STILL ACTIVE: {title}"),
            _ => title,
        };
        if event == "resolved" {
            m.resolved_at = Some(at);
        }
        m
    }

    /// Plain text for chat, ntfy and e-mail.
    pub fn plain(&self) -> String {
        let mut out = format!("{}\n\n{}\n", self.title, self.text);
        if !self.subject.agents.is_empty() && self.subject.type_ == "incident" {
            let names: Vec<&str> =
                self.subject.agents.iter().map(|a| a.hostname.as_str()).collect();
            out.push_str(&format!("Agents: {}\n", names.join(", ")));
        }
        if let Some(url) = &self.url {
            out.push_str(&format!("Dashboard: {url}\n"));
        }
        out.push_str(&format!("Event: {}\n", self.idempotency_key));
        out
    }

    /// ntfy's and chat's urgency of the message.
    pub fn priority(&self) -> u8 {
        match (self.event.as_str(), self.subject.severity.as_str()) {
            ("resolved" | "test", _) => 3,
            (_, "critical") => 5,
            (_, "warning") => 4,
            _ => 3,
        }
    }
}

/// `text` with every IP address, network and socket address replaced by
/// "[address]": a public channel never carries one.
pub fn scrub(text: &str) -> String {
    let is_part = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '/' | '[' | ']' | '%');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_part) {
        out.push_str(&rest[..start]);
        let token_len = rest[start..].find(|c: char| !is_part(c)).unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        if is_address(token.trim_end_matches(['.', ':'])) {
            let trimmed = token.trim_end_matches(['.', ':']);
            out.push_str("[address]");
            out.push_str(&token[trimmed.len()..]);
        } else {
            out.push_str(token);
        }
        rest = &rest[start + token_len..];
    }
    out.push_str(rest);
    out
}

fn is_address(token: &str) -> bool {
    use std::net::{IpAddr, SocketAddr};
    if token.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let bare = token.split('/').next().unwrap_or(token);
    let bare = bare.split('%').next().unwrap_or(bare);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return true;
    }
    // An IPv4 address with a port but no brackets needed: 10.0.0.1:51820.
    bare.rsplit_once(':').is_some_and(|(ip, port)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok() && port.parse::<u16>().is_ok()
    })
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_addresses_and_keeps_words_and_times() {
        assert_eq!(
            scrub("endpoint moved from 192.0.2.1:51820 to [2001:db8::1]:51820."),
            "endpoint moved from [address] to [address]."
        );
        assert_eq!(scrub("site 10.1.2.0/24: 3 agents"), "site [address]: 3 agents");
        assert_eq!(scrub("fe80::1%wg0 at 12:30:45 on wg0"), "[address]wg0 at 12:30:45 on wg0");
        assert_eq!(scrub("host-a peer_stale deadbeef"), "host-a peer_stale deadbeef");
    }
}
