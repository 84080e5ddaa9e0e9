//! Ordering kernel version strings the way distributions do.
//!
//! This is the Debian package version order (the one `dpkg
//! --compare-versions` and, near enough, `sort -V` use): digit runs compare
//! as numbers, everything else character by character with letters before
//! punctuation, and `~` sorting before anything, even the end of the
//! string, so `6.1~rc1` < `6.1` < `6.1.0`. It orders BLS entry names
//! (`<machine-id>-6.5.0-300.fc39.x86_64`) and `vmlinuz-*` suffixes alike.

use std::cmp::Ordering;

/// Rank of one non-digit position; `None` is the end of the run.
fn rank(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Splits `s` into its leading non-digit run and the rest.
fn split_non_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(u8::is_ascii_digit).unwrap_or(s.len());
    s.split_at(n)
}

/// Splits `s` into its leading digit run and the rest.
fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(n)
}

/// Compares two digit runs as numbers of any length, without parsing them
/// (a hostile name may hold a thousand digits).
fn compare_numbers(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |s: &[u8]| -> usize { s.iter().position(|&c| c != b'0').unwrap_or(s.len()) };
    let (a, b) = (&a[trim(a)..], &b[trim(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn compare_non_digits(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| rank(a.get(i).copied()).cmp(&rank(b.get(i).copied())))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Orders two version strings, older first.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        let ((an, ar), (bn, br)) = (split_non_digits(a), split_non_digits(b));
        let o = compare_non_digits(an, bn);
        if o.is_ne() {
            return o;
        }
        let ((ad, ar), (bd, br)) = (split_digits(ar), split_digits(br));
        let o = compare_numbers(ad, bd);
        if o.is_ne() {
            return o;
        }
        (a, b) = (ar, br);
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_by(|a, b| compare(a, b));
        v
    }

    #[test]
    fn numbers_compare_numerically() {
        assert_eq!(
            sorted(vec!["6.10.0-1", "6.1.0-27", "6.9.12", "6.1.0-3", "5.19"]),
            vec!["5.19", "6.1.0-3", "6.1.0-27", "6.9.12", "6.10.0-1"]
        );
    }

    #[test]
    fn tilde_sorts_before_release_and_letters_before_punctuation() {
        assert_eq!(compare("6.1~rc1", "6.1"), Ordering::Less);
        assert_eq!(compare("6.1", "6.1.0"), Ordering::Less);
        assert_eq!(compare("1a", "1+"), Ordering::Less);
        assert_eq!(compare("007", "7"), Ordering::Equal);
    }

    #[test]
    fn rescue_entries_sort_below_real_kernels() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            compare(
                &format!("{id}-0-rescue"),
                &format!("{id}-6.5.0-300.fc39.x86_64")
            ),
            Ordering::Less
        );
    }

    #[test]
    fn huge_digit_runs_do_not_overflow() {
        let big = "9".repeat(1000);
        assert_eq!(compare(&big, "1"), Ordering::Greater);
    }
}
