//! Bounding the strings the agent reports, so one absurd command line cannot
//! bloat an event (the spool refuses records above 256 KiB, and every byte is
//! sent and stored).

/// Longest path the agent reports, in bytes.
pub(crate) const MAX_PATH: usize = 4096;
/// Longest command line the agent reports, in bytes.
pub(crate) const MAX_CMDLINE: usize = 4096;

/// Cuts `s` to at most `max` bytes without splitting a UTF-8 character.
pub(crate) fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(truncate_utf8("héllo".into(), 2), "h");
        assert_eq!(truncate_utf8("héllo".into(), 3), "hé");
        assert_eq!(truncate_utf8("short".into(), 100), "short");
        assert_eq!(truncate_utf8("日本語".into(), 7), "日本");
    }
}
