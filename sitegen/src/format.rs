//! How values are written on pages and in titles: times, ages, sizes,
//! handshake bands, file names, shortened labels and the text marks that
//! stand beside colours. Pure functions of their arguments, shared by the
//! view, the maps, the matrices, the templates' filters and the JSON.

use kattila_fleet::{AgentStatus, Severity};

use crate::shown;

/// Labels are cut to this many characters (the title has the whole name).
pub const LABEL_CHARS: usize = 22;

/// "< 3 min", "< 10 min", "< 1 h", "> 1 h", "never".
pub fn handshake_band(age: Option<i64>) -> &'static str {
    match age {
        None => "never",
        Some(a) if a < 180 => "< 3 min",
        Some(a) if a < 600 => "< 10 min",
        Some(a) if a < 3600 => "< 1 h",
        Some(_) => "> 1 h",
    }
}

/// The CSS class of a [`handshake_band`].
pub fn band_class(band: &str) -> &'static str {
    match band {
        "< 3 min" => "fresh",
        "< 10 min" => "ok",
        "< 1 h" => "stale",
        "> 1 h" => "old",
        _ => "never",
    }
}

/// A file name for an agent's page: the id itself when it is plainly safe
/// (lowercase letters, digits, '-', '_', inner dots), else a hash of it.
pub fn page_name(agent_id: &str) -> String {
    let plain = !agent_id.is_empty()
        && agent_id.len() <= 64
        && !agent_id.starts_with('.')
        && !agent_id.ends_with('.')
        && agent_id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if plain {
        agent_id.to_string()
    } else {
        use sha2::Digest;
        format!("id-{}", &hex::encode(sha2::Sha256::digest(agent_id.as_bytes()))[..32])
    }
}

/// `label` with everything but ASCII letters and digits replaced by '-'.
pub fn file_safe(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// `s` with hidden characters made visible, cut to [`LABEL_CHARS`] (between
/// two characters of `s`, so that a mark is never cut in half).
pub fn cut(s: &str) -> String {
    let whole = shown::visible(s);
    if whole.chars().count() <= LABEL_CHARS {
        return whole.into_owned();
    }
    let mut t = String::new();
    let mut len = 0;
    for c in s.chars() {
        let piece = shown::visible(c.encode_utf8(&mut [0; 4])).into_owned();
        len += piece.chars().count();
        if len > LABEL_CHARS - 1 {
            break;
        }
        t.push_str(&piece);
    }
    t.push('…');
    t
}

/// The mark of an agent's status, so colour is never the only signal.
pub fn status_mark(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Silent => "✕",
        AgentStatus::Relay => "↪",
        AgentStatus::Up => "●",
    }
}

/// The mark of a cluster's health ('ok' or a severity word).
pub fn cluster_mark(health: &str) -> &'static str {
    match Severity::parse(health) {
        Some(Severity::Critical) => "✕",
        Some(Severity::Warning) => "!",
        _ => "●",
    }
}

/// RFC 3339 UTC, seconds precision.
pub fn iso_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// "2026-01-01 00:00:00 UTC".
pub fn human_time(unix: i64) -> String {
    iso_time(unix).replace('T', " ").replace('Z', " UTC")
}

/// "2026-01-01 00:00:00" (the `when` filter: the page says UTC once).
pub fn when(unix: i64) -> String {
    iso_time(unix).replace('T', " ").replace('Z', "")
}

/// "just now", "42 s", "5 min", "3 h", "2 d".
pub fn age_text(secs: i64) -> String {
    match secs {
        i64::MIN..=1 => "just now".into(),
        2..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// "just now", "42 s ago", "5 min ago", …
pub fn ago(secs: i64) -> String {
    match secs {
        i64::MIN..=1 => "just now".into(),
        _ => format!("{} ago", age_text(secs)),
    }
}

/// "3 min 20 s", "2 h 5 min", "4 d 3 h".
pub fn duration_text(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// 1536 → "1.5 KiB".
pub fn bytes_text(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n.max(0) as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{} B", n.max(0))
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_are_safe() {
        assert_eq!(page_name("0123abcd"), "0123abcd");
        for hostile in
            ["..", ".", "../x", "A/B", "con\u{0}", "Upper", "a b", "x".repeat(70).as_str()]
        {
            let n = page_name(hostile);
            assert!(n.starts_with("id-") && n.len() == 35, "{hostile:?} -> {n}");
        }
        assert_ne!(page_name("Upper"), page_name("upper"));
    }

    #[test]
    fn bands() {
        assert_eq!(handshake_band(None), "never");
        assert_eq!(handshake_band(Some(10)), "< 3 min");
        assert_eq!(handshake_band(Some(4000)), "> 1 h");
        assert_eq!(band_class(handshake_band(Some(10))), "fresh");
        assert_eq!(band_class(handshake_band(None)), "never");
    }

    #[test]
    fn labels_are_cut_between_characters_never_inside_a_mark() {
        assert_eq!(cut("site3-gw00"), "site3-gw00");
        let long = "Ωmega-ノード-".repeat(3);
        assert_eq!(cut(&long).chars().count(), LABEL_CHARS);
        let hidden = format!("{}\u{202e}{}", "a".repeat(LABEL_CHARS - 4), "b".repeat(10));
        let label = cut(&hidden);
        assert_eq!(
            label,
            format!("{}…", "a".repeat(LABEL_CHARS - 4)),
            "the mark does not fit whole"
        );
        assert_eq!(cut("\u{0}\u{7}x"), "␀␇x");
    }

    #[test]
    fn texts() {
        assert_eq!(iso_time(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(human_time(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(when(1_767_225_600), "2026-01-01 00:00:00");
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(300), "5 min ago");
        assert_eq!(ago(0), "just now", "never \"just now ago\"");
        assert_eq!(ago(90_000), "25 h ago");
        assert_eq!(duration_text(3725), "1 h 2 min");
        assert_eq!(bytes_text(1536), "1.5 KiB");
    }
}
