//! How untrusted text is shown in published HTML, SVG and XML. Agents
//! report their hostnames, interface names, errors and the like, so any
//! of it may hold characters that display as nothing (NUL, ESC, zero-width
//! spaces), or that reorder the text around them (U+202E RIGHT-TO-LEFT
//! OVERRIDE makes "key ABC, port 51820" after an interface name read
//! backwards). [`html`] makes such characters visible, isolates text that
//! has a direction of its own from its neighbours, and escapes the
//! result.
//!
//! Every string a template prints passes through [`html`] (the template
//! formatter in [`crate::render::environment`]), so no template can
//! forget it. Text composed in Rust from our words and agent-supplied
//! strings (an SVG title naming two hosts) is kept as [`Pieces`], so each
//! agent string is shown, and isolated, on its own.
//!
//! The JSON files keep the strings as the agents sent them: they are for
//! programs, and JSON escapes control characters itself.

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use unicode_bidi::BidiClass;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE: the plain-text form
/// of `<bdi>`. Used rather than `<bdi>` because text is also shown where
/// no markup is possible (`<title>`, attribute values, SVG `<title>`), and
/// the same characters work everywhere.
const FSI: char = '\u{2068}';
const PDI: char = '\u{2069}';

/// Characters that are not shown as themselves: controls (C0, DEL, C1),
/// invisible format characters (zero-width spaces and joiners, bidi
/// embeddings, overrides and isolates, the byte order mark, …), line and
/// paragraph separators, and unassigned code points (which display as
/// nothing or as an anonymous box).
fn hidden(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Unassigned
    )
}

/// The visible mark for a hidden character: its Unicode Control Picture
/// for C0 controls and DEL (`␀`, `␇`, `␛`, `␡`), else its code point
/// (`⟨U+202E⟩`).
fn push_mark(out: &mut String, c: char) {
    match c as u32 {
        n @ 0..=0x1f => out.push(char::from_u32(0x2400 + n).expect("control pictures")),
        0x7f => out.push('\u{2421}'),
        n => out.push_str(&format!("⟨U+{n:04X}⟩")),
    }
}

/// `s` with every hidden character replaced by its visible mark.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if hidden(c) {
            push_mark(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Holds right-to-left letters or Arabic digits: text that, unisolated,
/// would pull the neutral characters and numbers next to it into its own
/// direction. (Explicit embeddings and overrides are never left in text
/// that went through [`visible`].)
fn directional(s: &str) -> bool {
    s.chars().any(|c| {
        matches!(unicode_bidi::bidi_class(c), BidiClass::R | BidiClass::AL | BidiClass::AN)
    })
}

/// `s` made [`visible`], and wrapped in FSI … PDI when it has a direction
/// of its own, so that it cannot reorder the text around it. Text without
/// one is left unwrapped, so that it still compares equal, and copies
/// without invisible characters.
pub fn isolated(s: &str) -> Cow<'_, str> {
    let v = visible(s);
    if directional(&v) {
        Cow::Owned(format!("{FSI}{v}{PDI}"))
    } else {
        v
    }
}

/// `s` as HTML, SVG or XML text or attribute value: [`isolated`], then
/// escaped.
pub fn html(s: &str) -> String {
    escape_html(&isolated(s))
}

/// HTML/SVG text and attribute escaping: `& < > " '` (enough inside
/// elements and quoted attributes); '/' is left alone, so relative links
/// stay readable.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Text composed in Rust from our words and agent-supplied strings, kept
/// as pieces: in a template each piece is shown by [`html`] on its own,
/// so a right-to-left hostname is isolated by itself instead of turning
/// the whole sentence around. Put every agent-supplied string in a piece
/// of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Pieces(Vec<String>);

impl Pieces {
    pub fn new() -> Pieces {
        Pieces::default()
    }

    /// Appends a piece.
    pub fn and(mut self, piece: impl Into<String>) -> Pieces {
        self.0.push(piece.into());
        self
    }

    /// Appends the pieces of another text, each still on its own.
    pub fn join(mut self, other: Pieces) -> Pieces {
        self.0.extend(other.0);
        self
    }

    /// The pieces shown as HTML, one by one.
    pub fn html(&self) -> String {
        self.0.iter().map(|p| html(p)).collect()
    }

    /// The text as plain text (hidden characters made visible).
    pub fn plain(&self) -> String {
        self.0.iter().map(|p| visible(p)).collect()
    }
}

impl From<&str> for Pieces {
    fn from(s: &str) -> Pieces {
        Pieces(vec![s.to_string()])
    }
}

impl From<String> for Pieces {
    fn from(s: String) -> Pieces {
        Pieces(vec![s])
    }
}

/// To a template: the finished (escaped) markup, which the formatter
/// prints as it is. Anywhere else: plain text.
impl Serialize for Pieces {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if minijinja::value::serializing_for_value() {
            minijinja::Value::from_safe_string(self.html()).serialize(serializer)
        } else {
            serializer.serialize_str(&self.plain())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_become_visible_marks() {
        assert_eq!(visible("a\u{0}b\u{7}c\u{1b}[31m\u{7f}"), "a␀b␇c␛[31m␡");
        assert_eq!(visible("tab\there\nline"), "tab␉here␊line");
        assert_eq!(visible("x\u{85}\u{9b}y"), "x⟨U+0085⟩⟨U+009B⟩y");
        for (c, mark) in [
            ('\u{200B}', "⟨U+200B⟩"),
            ('\u{200D}', "⟨U+200D⟩"),
            ('\u{200F}', "⟨U+200F⟩"),
            ('\u{2028}', "⟨U+2028⟩"),
            ('\u{2029}', "⟨U+2029⟩"),
            ('\u{202A}', "⟨U+202A⟩"),
            ('\u{202E}', "⟨U+202E⟩"),
            ('\u{2066}', "⟨U+2066⟩"),
            ('\u{2068}', "⟨U+2068⟩"),
            ('\u{2069}', "⟨U+2069⟩"),
            ('\u{FEFF}', "⟨U+FEFF⟩"),
            ('\u{E0041}', "⟨U+E0041⟩"),
            ('\u{FFFF}', "⟨U+FFFF⟩"),
        ] {
            assert_eq!(visible(&format!("a{c}b")), format!("a{mark}b"), "{c:?}");
        }
        // Ordinary text, in any script, is left alone (and not copied).
        for s in ["site3-gw00", "Ωmega-ノード", "שרת-ראשי", "خادم", "a b\u{a0}c", "😀"]
        {
            assert!(matches!(visible(s), Cow::Borrowed(_)), "{s}");
        }
        // Marks are visible themselves: showing twice changes nothing.
        let once = visible("\u{0}\u{202e}\u{85}").into_owned();
        assert_eq!(visible(&once), once);
    }

    #[test]
    fn only_text_with_a_direction_of_its_own_is_isolated() {
        assert_eq!(isolated("eth0"), "eth0");
        assert_eq!(isolated("<b>&"), "<b>&");
        assert_eq!(isolated("שרת"), "\u{2068}שרת\u{2069}");
        assert_eq!(isolated("srv-خادم"), "\u{2068}srv-خادم\u{2069}");
        assert_eq!(isolated("١٢٣"), "\u{2068}١٢٣\u{2069}", "Arabic digits");
        // An override is made visible, so nothing is left to isolate; an
        // agent's own isolate characters never close ours.
        assert_eq!(isolated("\u{202e}eth0"), "⟨U+202E⟩eth0");
        assert_eq!(isolated("א\u{2069}b"), "\u{2068}א⟨U+2069⟩b\u{2069}");
    }

    #[test]
    fn html_is_isolated_and_escaped() {
        assert_eq!(html("<i>\u{0}"), "&lt;i&gt;␀");
        assert_eq!(html("'א'"), "\u{2068}&#x27;א&#x27;\u{2069}");
        assert_eq!(
            Pieces::new().and("שרת").and(" (").and("abc\u{7}").and("): up").html(),
            "\u{2068}שרת\u{2069} (abc␇): up"
        );
        assert_eq!(Pieces::from("a\u{202e}b").plain(), "a⟨U+202E⟩b");
    }
}
