//! How large what a user or an agent controls may grow before it reaches a
//! record. A record must fit the broker's message limit (about 1 MB on Kafka
//! and Redpanda): values that must stay whole (a step's output, a signal's
//! body) go through the payload store by reference; texts that only explain
//! (an error message, a quoted value) are cut here, with a marker that says
//! how much was left out. The README's "Bounds" section lists every limit.

/// The longest error message a record carries, in bytes of UTF-8. Longer
/// ones keep their first part and end with [`cut`]'s marker.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `s` itself when it has at most `max` bytes; otherwise its first part (cut
/// at a character boundary) followed by `… [N bytes cut]`, at most `max`
/// bytes in all (plus the marker when `max` is smaller than it).
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    // The marker's length depends on the count it shows; reserve for the
    // longest count (`s.len()`), so the result never exceeds `max`.
    let reserve = marker(s.len()).len();
    let mut end = max.saturating_sub(reserve);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + reserve);
    out.push_str(&s[..end]);
    out.push_str(&marker(s.len() - end));
    out
}

/// [`cut`] to [`MAX_MESSAGE_BYTES`].
pub fn message(s: &str) -> String {
    cut(s, MAX_MESSAGE_BYTES)
}

fn marker(n: usize) -> String {
    format!("… [{n} bytes cut]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_kept_whole() {
        assert_eq!(cut("no such key", 64), "no such key");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn long_texts_are_cut_with_a_marker_within_the_bound() {
        let long = "x".repeat(1_200_000);
        let c = message(&long);
        assert!(c.len() <= MAX_MESSAGE_BYTES, "{}", c.len());
        assert!(c.starts_with("xxxx"));
        assert!(c.ends_with(" bytes cut]"), "{c}");
        let kept = c.find('…').unwrap();
        assert_eq!(
            c,
            format!("{}… [{} bytes cut]", &long[..kept], long.len() - kept)
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        for s in ["é".repeat(5000), "𝄞".repeat(5000), "aé𝄞".repeat(3000)] {
            for max in [0, 1, 5, 30, 31, 32, 33, 100, 1023, 1024] {
                let c = cut(&s, max);
                assert!(
                    c.len() <= max.max(marker(s.len()).len()),
                    "{max}: {}",
                    c.len()
                );
                assert!(c.ends_with(" bytes cut]"));
            }
        }
    }
}
