//! Natural order of names as people read them: runs of digits compare as
//! numbers, so `site2` comes before `site10` and `10.0.2.0/24` before
//! `10.0.10.0/24`. Pure, for every list a reader scans for a name.

use std::cmp::Ordering;

/// `a` and `b` in natural order: digit runs by value (then by length, so
/// `007` and `7` still differ), everything else by character, letters
/// ignoring case first. Equal only when the strings are.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    while let (Some(cx), Some(cy)) = (x.chars().next(), y.chars().next()) {
        let order = if cx.is_ascii_digit() && cy.is_ascii_digit() {
            let (dx, rx) = split_digits(x);
            let (dy, ry) = split_digits(y);
            (x, y) = (rx, ry);
            number_cmp(dx, dy)
        } else {
            (x, y) = (&x[cx.len_utf8()..], &y[cy.len_utf8()..]);
            cx.to_lowercase().cmp(cy.to_lowercase())
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    // A prefix first; names that differ only in case or leading zeros
    // still get one fixed order.
    x.len().cmp(&y.len()).then_with(|| a.cmp(b))
}

/// The leading run of ASCII digits of `s`, and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Two digit runs by value, of any length (no overflow).
fn number_cmp(a: &str, b: &str) -> Ordering {
    let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)).then_with(|| a.len().cmp(&b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        v.sort_by(|a, b| natural_cmp(a, b));
        v
    }

    #[test]
    fn numbers_by_value() {
        assert_eq!(
            sorted(&["site10-gw00", "site2-node01", "site2-gw00", "site1-gw00"]),
            ["site1-gw00", "site2-gw00", "site2-node01", "site10-gw00"]
        );
        assert_eq!(
            sorted(&["10.0.10.0/24", "10.0.2.0/24", "10.0.1.0/24", "9.9.9.0/24"]),
            ["9.9.9.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.10.0/24"]
        );
        // Longer than any integer type.
        assert_eq!(
            natural_cmp("n123456789012345678901234567890", "n99999999999999999999999999999"),
            Ordering::Greater
        );
    }

    #[test]
    fn letters_ignore_case_and_prefixes_come_first() {
        assert_eq!(sorted(&["beta", "Alpha", "alp"]), ["alp", "Alpha", "beta"]);
        assert_eq!(sorted(&["a10b", "a10", "a9z"]), ["a9z", "a10", "a10b"]);
    }

    #[test]
    fn a_total_order_that_tells_different_names_apart() {
        assert_eq!(natural_cmp("x07", "x7"), Ordering::Greater);
        assert_eq!(natural_cmp("x7", "x07"), Ordering::Less);
        assert_eq!(natural_cmp("Host", "host"), "Host".cmp("host"));
        assert_eq!(natural_cmp("same", "same"), Ordering::Equal);
        assert_eq!(natural_cmp("", "a"), Ordering::Less);
        assert_eq!(natural_cmp("ノード2", "ノード10"), Ordering::Less);
    }
}
