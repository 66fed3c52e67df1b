//! Natural order for names people read: runs of digits compare by their
//! value, so site2 comes before site10 and 10.0.0.9 before 10.0.0.10.
//! Ties fall back to plain text order, so the order is total and stable.

use std::cmp::Ordering;

/// Compares two names in natural order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let (dx, rest_x) = split_digits(x);
                let (dy, rest_y) = split_digits(y);
                // Leading zeros do not change a number's value.
                let (tx, ty) = (trim_zeros(dx), trim_zeros(dy));
                let by_value = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (rest_x, rest_y);
            }
            (Some(p), Some(q)) => {
                let by_char = p.to_ascii_lowercase().cmp(&q.to_ascii_lowercase());
                if by_char != Ordering::Equal {
                    return by_char;
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b'0').count();
    &s[n.min(s.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_by_value() {
        let mut names =
            vec!["site10", "site2", "site1", "Site3", "site02", "gw", "10.0.0.10", "10.0.0.9"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["10.0.0.9", "10.0.0.10", "gw", "site1", "site02", "site2", "Site3", "site10"]
        );
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
        assert_ne!(natural_cmp("site02", "site2"), Ordering::Equal, "total order");
        // Multi-byte text compares bytewise, never panics.
        assert_eq!(natural_cmp("päivä2", "päivä10"), Ordering::Less);
    }
}
