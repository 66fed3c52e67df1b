//! Rendering the snapshot into files with minijinja. Templates are embedded
//! from `templates/`; agent-supplied strings are untrusted and escaped in
//! HTML and SVG alike.

use minijinja::value::Serde;
use minijinja::{context, AutoEscape, Environment};
use serde::Serialize;

use crate::snapshot::FleetSnapshot;

/// One output file: path relative to the site root, and contents.
pub type SiteFile = (String, Vec<u8>);

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("index.html", include_str!("../../templates/index.html")),
];

const STATIC_FILES: &[(&str, &str)] =
    &[("static/style.css", include_str!("../../templates/static/style.css"))];

/// The template environment. minijinja escapes `.html` by file name but not
/// `.svg`; the callback makes every markup template escape.
pub fn environment() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") || name.ends_with(".svg") || name.ends_with(".xml") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

#[derive(Serialize)]
struct AgentView<'a> {
    agent_id: &'a str,
    hostname: &'a str,
    agent_version: &'a str,
    last_seen_iso: String,
    last_seen_ago: String,
    relay_hops: i64,
}

/// Renders every file of the site.
pub fn render_site(snap: &FleetSnapshot, now: i64) -> anyhow::Result<Vec<SiteFile>> {
    let env = environment()?;
    let agents: Vec<AgentView<'_>> = snap
        .agents
        .iter()
        .map(|a| AgentView {
            agent_id: &a.agent_id,
            hostname: &a.hostname,
            agent_version: &a.agent_version,
            last_seen_iso: iso_time(a.last_seen),
            last_seen_ago: ago(now - a.last_seen),
            relay_hops: a.relay_hops,
        })
        .collect();
    let index = env.get_template("index.html")?.render(context! {
        root => "",
        generated_iso => iso_time(now),
        generated_human => iso_time(now).replace('T', " ").replace('Z', " UTC"),
        agents => Serde(&agents),
    })?;
    let mut files = vec![("index.html".to_string(), index.into_bytes())];
    files.extend(STATIC_FILES.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())));
    Ok(files)
}

/// RFC 3339 UTC, seconds precision.
pub fn iso_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago".
pub fn ago(secs: i64) -> String {
    match secs {
        i64::MIN..=1 => "just now".into(),
        2..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        7200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::AgentRow;

    fn agent(hostname: &str) -> AgentRow {
        AgentRow {
            agent_id: "a1".into(),
            hostname: hostname.into(),
            agent_version: "0.1.0".into(),
            first_seen: 0,
            last_seen: 1_767_225_600,
            relay_hops: 0,
        }
    }

    #[test]
    fn hostile_hostnames_are_escaped() {
        let snap = FleetSnapshot { agents: vec![agent("<script>alert('x')</script>\"&")] };
        let files = render_site(&snap, 1_767_225_700).unwrap();
        let index = String::from_utf8(files[0].1.clone()).unwrap();
        assert!(!index.contains("<script>"));
        assert!(index.contains("&lt;script&gt;"));
        assert!(index.contains("100 s ago"));
    }

    #[test]
    fn svg_templates_are_escaped_too() {
        let mut env = environment().unwrap();
        env.add_template("t.svg", "<svg><title>{{ name }}</title></svg>").unwrap();
        let out = env.get_template("t.svg").unwrap().render(context! { name => "<b>&" }).unwrap();
        assert_eq!(out, "<svg><title>&lt;b&gt;&amp;</title></svg>");
    }

    #[test]
    fn times() {
        assert_eq!(iso_time(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(300), "5 min ago");
        assert_eq!(ago(90_000), "25 h ago");
    }
}
