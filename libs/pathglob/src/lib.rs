//! Path globs of a policy — confidential folders (`/srv/hr/**`,
//! `C:\Secret\**`) and banned-app paths (`/opt/p2p/**`) — compiled once per
//! policy and matched in time linear in the path.
//!
//! Tenants write these patterns and agents choose the paths, and both the
//! shared alerting consumer and every agent match one against the other.
//! The matcher this replaced (the `glob` crate) backtracked: 200 patterns
//! of the form `*aaa…ab` against a 4,096-byte path cost seconds per event,
//! which one tenant could use to stall every tenant's alarms. A general
//! regular-expression set is no cure (measured: `regex::RegexSet` took
//! longer still on the same input, its lazy automaton thrashing).
//!
//! A glob without backtracking: a pattern is a run of fixed-length
//! segments (literals, `?` and classes, one character each) separated by
//! gaps (`*`, which takes anything, or `**/`, which takes whole path
//! components). The first segment must sit at the start of the path and
//! the last at its end; every middle one is placed at its leftmost
//! occurrence the gap before it allows, which is always right because a
//! gap can absorb whatever lies before any later occurrence (and the
//! character before a `**/` gap is a separator, so a component gap's
//! choices only shrink as its start moves right). Occurrences are found
//! with the bit-parallel Shift-And algorithm, so one pattern costs
//! O(path × ⌈longest segment / 64⌉), whatever its shape, and
//! [`MAX_TOTAL_BYTES`] bounds the pattern text a policy may hold.
//! `mamori-glob-bench` (in `loadtest/`) prints the worst cases.
//!
//! The syntax is the old matcher's, so stored policies keep their meaning:
//! `*` is any run of characters, separators included; `**` must be a whole
//! path component: at the end it is everything below (`/srv/hr/**`),
//! elsewhere zero or more whole components (`a/**/b` matches `a/b` and
//! `a/x/y/b`, not `a/xb`); `?` is one character; `[abc]`, `[a-z]` and
//! `[!abc]` are classes (`]` may come first in one). Everything else, the
//! backslash and braces included, is itself, so Windows paths are written
//! as they are. Unlike the old matcher, `\` counts as a separator next to
//! `**` on every platform.

/// The longest single pattern.
pub const MAX_PATTERN_BYTES: usize = 500;

/// The most pattern text one policy document may hold, its confidential
/// folders and banned-app paths together: a few hundred real paths. The
/// worst-case time per path grows with it.
pub const MAX_TOTAL_BYTES: usize = 16 * 1024;

/// Whether letters match regardless of case (Windows paths) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Sensitive,
    Insensitive,
}

/// A refused pattern: its position in the list and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} is not a valid glob: {message}")]
pub struct GlobError {
    pub index: usize,
    pub pattern: String,
    pub message: String,
}

/// Checks one pattern on its own (its length and syntax).
pub fn check(pattern: &str) -> Result<(), String> {
    Glob::parse(pattern, Case::Sensitive).map(drop)
}

fn is_separator(c: char) -> bool {
    c == '/' || c == '\\'
}

/// `c` folded for a case-insensitive comparison.
fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// What matches one character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Char(char),
    Any,
    /// Members as inclusive ranges; `negated` matches what is outside them.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Atom {
    /// Whether `c` matches. Case-insensitive, a literal (stored folded)
    /// matches `c` folded, and a range between two letters matches
    /// letters folded into it, as the old matcher did for ASCII.
    fn matches(&self, c: char, case: Case) -> bool {
        match (self, case) {
            (Atom::Char(p), Case::Sensitive) => *p == c,
            (Atom::Char(p), Case::Insensitive) => *p == fold(c),
            (Atom::Any, _) => true,
            (Atom::Class { negated, ranges }, _) => {
                let hit = ranges.iter().any(|&(lo, hi)| {
                    (lo <= c && c <= hi)
                        || (case == Case::Insensitive && {
                            let f = fold(c);
                            if lo == hi {
                                fold(lo) == f
                            } else {
                                lo.is_alphabetic()
                                    && hi.is_alphabetic()
                                    && fold(lo) <= f
                                    && f <= fold(hi)
                            }
                        })
                });
                hit != *negated
            }
        }
    }
}

/// What lies between two segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// `*` (or a final `**`): any characters.
    Free,
    /// `**/` before more pattern: nothing, or anything ending with a
    /// separator.
    Components,
}

impl Gap {
    /// Whether the next segment may start at `at` when the gap starts at
    /// `from`.
    fn allows(self, path: &[char], from: usize, at: usize) -> bool {
        match self {
            Gap::Free => at >= from,
            Gap::Components => at == from || (at > from && is_separator(path[at - 1])),
        }
    }
}

/// Characters matched one to one, with the masks Shift-And runs on: bit
/// `i` of a mask is position `i` of the segment.
#[derive(Debug, Clone)]
struct Segment {
    atoms: Vec<Atom>,
    words: usize,
    /// Positions any character matches (`?`, negated classes are handled
    /// per character).
    any: Vec<u64>,
    /// Per ASCII character, the positions it matches (from literals and
    /// classes).
    ascii: Vec<u64>,
    /// Beyond ASCII (case-sensitive): the characters where some literal or
    /// class range of the segment starts or ends cut the rest of Unicode
    /// into intervals in which every character matches the same positions;
    /// `above[i]` starts interval `i + 1`, and `above_masks` holds each
    /// interval's positions. So a Japanese path costs a binary search per
    /// character, not a pass over the segment.
    above: Vec<u32>,
    above_masks: Vec<u64>,
    case: Case,
}

impl Segment {
    fn new(atoms: Vec<Atom>, case: Case) -> Self {
        let words = atoms.len().div_ceil(64).max(1);
        let mut any = vec![0u64; words];
        let mut ascii = vec![0u64; 128 * words];
        for (i, atom) in atoms.iter().enumerate() {
            let bit = 1u64 << (i % 64);
            if *atom == Atom::Any {
                any[i / 64] |= bit;
                continue;
            }
            for c in 0..128u8 {
                if atom.matches(char::from(c), case) {
                    ascii[usize::from(c) * words + i / 64] |= bit;
                }
            }
        }
        let (above, above_masks) = match case {
            Case::Sensitive => intervals(&atoms, words),
            // Folding does not keep intervals intact; worked out per
            // character instead (only the agent matches case-insensitively,
            // against its own PC's paths).
            Case::Insensitive => (Vec::new(), Vec::new()),
        };
        Self {
            atoms,
            words,
            any,
            ascii,
            above,
            above_masks,
            case,
        }
    }

    fn len(&self) -> usize {
        self.atoms.len()
    }

    fn matches_at(&self, path: &[char], at: usize) -> bool {
        path.len() >= at + self.len()
            && self
                .atoms
                .iter()
                .zip(&path[at..])
                .all(|(a, &c)| a.matches(c, self.case))
    }

    /// The positions `c` matches, into `mask`.
    fn mask_of(&self, c: char, mask: &mut [u64]) {
        if c.is_ascii() {
            let row = usize::from(c as u8) * self.words;
            for (m, (a, b)) in mask
                .iter_mut()
                .zip(self.any.iter().zip(&self.ascii[row..row + self.words]))
            {
                *m = a | b;
            }
            return;
        }
        if self.case == Case::Sensitive {
            let i = self.above.partition_point(|&b| b <= u32::from(c));
            let row = &self.above_masks[i * self.words..(i + 1) * self.words];
            for (m, (a, b)) in mask.iter_mut().zip(self.any.iter().zip(row)) {
                *m = a | b;
            }
            return;
        }
        mask.copy_from_slice(&self.any);
        for (i, atom) in self.atoms.iter().enumerate() {
            if *atom != Atom::Any && atom.matches(c, self.case) {
                mask[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// The end of the leftmost occurrence starting where `gap` (from
    /// `from`) allows.
    fn find(&self, path: &[char], from: usize, gap: Gap, scratch: &mut Scratch) -> Option<usize> {
        let m = self.len();
        if m == 0 {
            return (from..=path.len()).find(|&at| gap.allows(path, from, at));
        }
        scratch.state.clear();
        scratch.state.resize(self.words, 0);
        scratch.mask.resize(self.words, 0);
        let (last_word, last_bit) = ((m - 1) / 64, 1u64 << ((m - 1) % 64));
        for (j, &c) in path.iter().enumerate().skip(from) {
            self.mask_of(c, &mut scratch.mask[..self.words]);
            // state = ((state << 1) | 1) & mask, across words.
            let mut carry = 1u64;
            for (s, m) in scratch.state.iter_mut().zip(&scratch.mask) {
                let next = (*s << 1) | carry;
                carry = *s >> 63;
                *s = next & m;
            }
            if scratch.state[last_word] & last_bit != 0 {
                let start = j + 1 - m;
                if gap.allows(path, from, start) {
                    return Some(j + 1);
                }
            }
        }
        None
    }
}

/// The intervals of non-ASCII characters a segment's atoms cannot tell
/// apart (case-sensitive), and each one's positions (see `Segment::above`).
fn intervals(atoms: &[Atom], words: usize) -> (Vec<u32>, Vec<u64>) {
    let mut cuts: Vec<u32> = Vec::new();
    let mut cut = |lo: char, hi: char| {
        for b in [u32::from(lo), u32::from(hi) + 1] {
            if b > 0x7f && b <= 0x10_ffff {
                cuts.push(b);
            }
        }
    };
    for atom in atoms {
        match atom {
            Atom::Char(c) => cut(*c, *c),
            Atom::Class { ranges, .. } => {
                for &(lo, hi) in ranges {
                    cut(lo, hi);
                }
            }
            Atom::Any => {}
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    // Interval 0 is [0x80, cuts[0]); interval i + 1 starts at cuts[i].
    let starts = std::iter::once(0x80).chain(cuts.iter().copied());
    let mut masks = Vec::with_capacity((cuts.len() + 1) * words);
    for start in starts {
        // A character of the interval (the surrogates are no characters).
        let probe = char::from_u32(start).unwrap_or('\u{e000}');
        let mut row = vec![0u64; words];
        for (i, atom) in atoms.iter().enumerate() {
            if *atom != Atom::Any && atom.matches(probe, Case::Sensitive) {
                row[i / 64] |= 1 << (i % 64);
            }
        }
        masks.extend(row);
    }
    (cuts, masks)
}

/// Reused buffers of a search.
#[derive(Debug, Default)]
struct Scratch {
    path: Vec<char>,
    state: Vec<u64>,
    mask: Vec<u64>,
}

/// One compiled pattern: the first segment, then gaps and segments.
#[derive(Debug, Clone)]
struct Glob {
    first: Segment,
    rest: Vec<(Gap, Segment)>,
}

impl Glob {
    fn parse(pattern: &str, case: Case) -> Result<Self, String> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!("is longer than {MAX_PATTERN_BYTES} bytes"));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let byte_at = |i: usize| chars[..i].iter().map(|c| c.len_utf8()).sum::<usize>();
        let fold_atom = |c: char| match case {
            Case::Sensitive => c,
            Case::Insensitive => fold(c),
        };
        let mut pieces: Vec<(Option<Gap>, Vec<Atom>)> = vec![(None, Vec::new())];
        let gap = |pieces: &mut Vec<(Option<Gap>, Vec<Atom>)>, g: Gap| {
            let last = pieces.last_mut().expect("never empty");
            // Two gaps in a row are one: any `*` makes it free.
            if last.1.is_empty() && last.0.is_some() {
                if g == Gap::Free {
                    last.0 = Some(Gap::Free);
                }
            } else {
                pieces.push((Some(g), Vec::new()));
            }
        };
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '?' => {
                    pieces.last_mut().expect("never empty").1.push(Atom::Any);
                    i += 1;
                }
                '*' => {
                    let start = i;
                    while i < chars.len() && chars[i] == '*' {
                        i += 1;
                    }
                    match i - start {
                        1 => gap(&mut pieces, Gap::Free),
                        2 => {
                            if start > 0 && !is_separator(chars[start - 1]) {
                                return Err(format!(
                                    "`**` at byte {} must be a whole path component (a/**/b)",
                                    byte_at(start)
                                ));
                            }
                            if i < chars.len() {
                                if !is_separator(chars[i]) {
                                    return Err(format!(
                                        "`**` at byte {} must be a whole path component (a/**/b)",
                                        byte_at(start)
                                    ));
                                }
                                // The separator after `**` is part of it.
                                i += 1;
                            }
                            let g = if i == chars.len() {
                                Gap::Free
                            } else {
                                Gap::Components
                            };
                            gap(&mut pieces, g);
                        }
                        _ => {
                            return Err(format!(
                                "wildcards are `*` or `**`, not {} stars (at byte {})",
                                i - start,
                                byte_at(start)
                            ));
                        }
                    }
                }
                '[' => {
                    let negated = chars.get(i + 1) == Some(&'!');
                    let first = i + if negated { 2 } else { 1 };
                    // The first member may be `]`; the class ends at the
                    // next one.
                    let close = chars
                        .get(first + 1..)
                        .and_then(|rest| rest.iter().position(|&c| c == ']'))
                        .map(|p| first + 1 + p)
                        .ok_or_else(|| {
                            format!("the class at byte {} has no closing `]`", byte_at(i))
                        })?;
                    let members = &chars[first..close];
                    let mut ranges = Vec::new();
                    let mut k = 0;
                    while k < members.len() {
                        if k + 3 <= members.len() && members[k + 1] == '-' {
                            // A backwards range matches nothing.
                            if members[k] <= members[k + 2] {
                                ranges.push((members[k], members[k + 2]));
                            }
                            k += 3;
                        } else {
                            ranges.push((members[k], members[k]));
                            k += 1;
                        }
                    }
                    pieces
                        .last_mut()
                        .expect("never empty")
                        .1
                        .push(Atom::Class { negated, ranges });
                    i = close + 1;
                }
                c => {
                    pieces
                        .last_mut()
                        .expect("never empty")
                        .1
                        .push(Atom::Char(fold_atom(c)));
                    i += 1;
                }
            }
        }
        let mut pieces = pieces.into_iter();
        let (_, first) = pieces.next().expect("never empty");
        Ok(Glob {
            first: Segment::new(first, case),
            rest: pieces
                .map(|(g, atoms)| (g.expect("gaps after the first"), Segment::new(atoms, case)))
                .collect(),
        })
    }

    fn matches(&self, path: &[char], scratch: &mut Scratch) -> bool {
        let Some(((last_gap, last), middle)) = self.rest.split_last() else {
            return self.first.len() == path.len() && self.first.matches_at(path, 0);
        };
        if !self.first.matches_at(path, 0) {
            return false;
        }
        let mut at = self.first.len();
        for (gap, segment) in middle {
            match segment.find(path, at, *gap, scratch) {
                Some(end) => at = end,
                None => return false,
            }
        }
        // The last segment ends the path.
        let Some(start) = path.len().checked_sub(last.len()) else {
            return false;
        };
        last_gap.allows(path, at, start) && last.matches_at(path, start)
    }
}

/// A list of patterns compiled for matching.
#[derive(Debug, Clone, Default)]
pub struct PathGlobs {
    globs: Vec<Glob>,
}

impl PathGlobs {
    /// Compiles `patterns`; the error names the first bad one. The total
    /// size is the caller's to bound (see [`MAX_TOTAL_BYTES`]).
    pub fn new<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
        case: Case,
    ) -> Result<Self, GlobError> {
        let globs = patterns
            .into_iter()
            .enumerate()
            .map(|(index, pattern)| {
                Glob::parse(pattern, case).map_err(|message| GlobError {
                    index,
                    pattern: pattern.to_owned(),
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { globs })
    }

    pub fn len(&self) -> usize {
        self.globs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// Runs `f` with `path` as characters and buffers to search with.
    fn with_path<T>(&self, path: &str, f: impl FnOnce(&[char], &mut Scratch) -> T) -> T {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let mut chars = std::mem::take(&mut s.path);
            chars.clear();
            chars.extend(path.chars());
            let out = f(&chars, &mut s);
            s.path = chars;
            out
        })
    }

    /// Whether any pattern matches `path`.
    pub fn is_match(&self, path: &str) -> bool {
        self.first_match(path).is_some()
    }

    /// The lowest index of a pattern that matches `path`.
    pub fn first_match(&self, path: &str) -> Option<usize> {
        if self.globs.is_empty() {
            return None;
        }
        self.with_path(path, |chars, scratch| {
            self.globs.iter().position(|g| g.matches(chars, scratch))
        })
    }

    /// Every index of a pattern that matches `path`, ascending.
    pub fn matches(&self, path: &str) -> Vec<usize> {
        if self.globs.is_empty() {
            return Vec::new();
        }
        self.with_path(path, |chars, scratch| {
            (0..self.globs.len())
                .filter(|&i| self.globs[i].matches(chars, scratch))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn globs(patterns: &[&str]) -> PathGlobs {
        PathGlobs::new(patterns.iter().copied(), Case::Sensitive).unwrap()
    }

    #[test]
    fn folders_and_programs_match_as_administrators_write_them() {
        let g = globs(&[
            "/srv/hr/**",
            "C:\\Secret\\*",
            "/opt/p2p/*/share",
            "/home/*/Documents/[Mm]y?Number*.xlsx",
            "/srv/{legal}/**",
        ]);
        assert_eq!(g.first_match("/srv/hr/pay.xlsx"), Some(0));
        assert_eq!(g.first_match("/srv/hr/2026/12/pay.xlsx"), Some(0));
        assert_eq!(g.first_match("/srv/www/index.html"), None);
        // A backslash is a character, not an escape.
        assert_eq!(g.first_match("C:\\Secret\\plan.docx"), Some(1));
        assert_eq!(g.first_match("C:\\Secret\\a\\b.docx"), Some(1));
        assert_eq!(g.first_match("C:\\Public\\plan.docx"), None);
        // `*` crosses separators, as the matcher it replaced did.
        assert_eq!(g.first_match("/opt/p2p/bin/x/share"), Some(2));
        assert_eq!(
            g.first_match("/home/aiko/Documents/My_Number list.xlsx"),
            Some(3)
        );
        // Braces are themselves.
        assert_eq!(g.first_match("/srv/{legal}/contract.pdf"), Some(4));
        assert_eq!(g.first_match("/srv/legal/contract.pdf"), None);
        // Classes: `]` first, ranges, backwards ranges, negation.
        let c = globs(&["/x/[]a]", "/y/[z-a]", "/z/[!z-a]", "/w/[!0-9]"]);
        assert_eq!(c.first_match("/x/]"), Some(0));
        assert_eq!(c.first_match("/y/b"), None);
        assert_eq!(c.first_match("/z/b"), Some(2));
        assert_eq!(c.first_match("/w/5"), None);
        assert_eq!(c.first_match("/w/あ"), Some(3));
        // `**` beside a backslash, and the separator after it.
        let w = globs(&["C:\\Data\\**\\*.xlsx", "/a/**/b"]);
        assert_eq!(w.first_match("C:\\Data\\x\\y.xlsx"), Some(0));
        assert_eq!(w.first_match("/a/b"), Some(1));
        assert_eq!(w.first_match("/a/x/y/b"), Some(1));
        assert_eq!(w.first_match("/a/xb"), None);
        assert_eq!(g.matches("/srv/hr/x"), vec![0]);
        assert!(!globs(&[]).is_match("/anything"));
    }

    #[test]
    fn case_is_a_choice() {
        let sensitive = globs(&["C:\\Secret\\*"]);
        let insensitive = PathGlobs::new(["C:\\Secret\\*"], Case::Insensitive).unwrap();
        assert!(!sensitive.is_match("c:\\SECRET\\plan.docx"));
        assert!(insensitive.is_match("c:\\SECRET\\plan.docx"));
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = PathGlobs::new(["/ok/**", "/opt/[p2p"], Case::Sensitive).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("/opt/[p2p"), "{e}");
        assert!(check("/opt/[p2p").is_err());
        assert!(check(&"a".repeat(MAX_PATTERN_BYTES + 1)).is_err());
        assert!(check("/srv/hr/**").is_ok());
    }

    /// The matcher this crate replaced, on the syntax both share: random
    /// patterns of literals, separators, `*`, `**`, `?` and classes against
    /// random paths must get the same answer from both.
    #[test]
    fn agrees_with_the_backtracking_matcher_it_replaced() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let atoms = [
            "a",
            "B",
            "/",
            "*",
            "?",
            "[ab]",
            "[!a]",
            "[A-b]",
            "**",
            "\\",
            ".",
            "あ",
            "[ぁ-ん]",
            "[!ア]",
            "[a漢]",
        ];
        let chars = [
            'a', 'A', 'b', 'B', 'c', '/', '\\', '.', 'あ', 'ん', 'ア', '漢', '字',
        ];
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        let (mut compared, mut matched, mut refused) = (0, 0, 0);
        for _ in 0..3000 {
            let pattern: String = (0..rng.random_range(1..8))
                .map(|_| atoms[rng.random_range(0..atoms.len())])
                .collect();
            // Both refuse the same patterns, but for `**` beside a
            // backslash, which only the new one takes for a separator.
            let Ok(old) = glob::Pattern::new(&pattern) else {
                if !pattern.contains("\\**") && !pattern.contains("**\\") {
                    assert!(check(&pattern).is_err(), "{pattern:?} is accepted");
                    refused += 1;
                }
                continue;
            };
            assert!(check(&pattern).is_ok(), "{pattern:?} is refused");
            let new = globs(&[&pattern]);
            let insensitive = PathGlobs::new([pattern.as_str()], Case::Insensitive).unwrap();
            for _ in 0..20 {
                let path: String = (0..rng.random_range(0..9))
                    .map(|_| chars[rng.random_range(0..chars.len())])
                    .collect();
                // The old matcher knew only `/` as a separator on Linux.
                if pattern.contains("**") && path.contains('\\') {
                    continue;
                }
                let want = old.matches_with(&path, opts);
                assert_eq!(
                    new.is_match(&path),
                    want,
                    "pattern {pattern:?} path {path:?}"
                );
                let folded = glob::MatchOptions {
                    case_sensitive: false,
                    ..opts
                };
                assert_eq!(
                    insensitive.is_match(&path),
                    old.matches_with(&path, folded),
                    "pattern {pattern:?} path {path:?}, case-insensitive"
                );
                compared += 1;
                matched += usize::from(want);
            }
        }
        assert!(
            compared > 20_000 && matched > 2_000 && refused > 100,
            "{compared} {matched} {refused}"
        );
    }
}
