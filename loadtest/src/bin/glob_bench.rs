//! Worst cases of policy path globs: hostile pattern sets against a
//! 4,096-byte path (the longest an agent may send), matched by the
//! backtracking `glob` crate the services used before and by
//! `mamori_pathglob`, which replaced it. Prints the time per path.
//!
//! `cargo run --release -p mamori-loadtest --bin mamori-glob-bench`

use mamori_pathglob::{Case, MAX_TOTAL_BYTES, PathGlobs};
use std::time::{Duration, Instant};

/// One hostile shape: a name and its patterns.
fn shapes() -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    // The review's case: `*` + 450 × `a` + `b`, 200 of them.
    let star_run = format!("*{}b", "a".repeat(450));
    out.push(("200 x *a{450}b (review)", vec![star_run.clone(); 200]));
    // The same shape within the size bound.
    let n = MAX_TOTAL_BYTES / star_run.len();
    out.push(("*a{450}b to the bound", vec![star_run; n]));
    // A segment between two stars is searched for along the whole path.
    let middle = format!("*{}b*", "a".repeat(450));
    let n = MAX_TOTAL_BYTES / middle.len();
    out.push(("*a{450}b* to the bound", vec![middle; n]));
    let middle = format!("*{}*", "[ab]".repeat(120));
    let n = MAX_TOTAL_BYTES / middle.len();
    out.push(("*[ab]{120}* to the bound", vec![middle; n]));
    // Classes of Japanese characters, for Japanese paths.
    let kana = format!("*{}*", "[ぁ-ゖ]".repeat(50));
    let n = MAX_TOTAL_BYTES / kana.len();
    out.push(("*[ぁ-ゖ]{50}* to the bound", vec![kana; n]));
    let kana = format!("*{}x*", "あ".repeat(150));
    let n = MAX_TOTAL_BYTES / kana.len();
    out.push(("*あ{150}x* to the bound", vec![kana; n]));
    // Runs of different lengths: many distinct automaton states.
    let mut varied = Vec::new();
    let mut total = 0;
    for k in 1.. {
        let p = format!("*{}b", "a".repeat(k * 7 % 450 + 1));
        if total + p.len() > MAX_TOTAL_BYTES {
            break;
        }
        total += p.len();
        varied.push(p);
    }
    out.push(("*a{k}b, k varied, to the bound", varied));
    // Many stars: exponential for a backtracker.
    let stars = format!("{}b*", "*a".repeat(200));
    let n = MAX_TOTAL_BYTES / stars.len();
    out.push(("(*a){200}b* to the bound", vec![stars; n]));
    // `a` followed by n arbitrary characters: a classic automaton blow-up.
    let mut blowup = Vec::new();
    let mut total = 0;
    for k in 10.. {
        let p = format!("*a{}*", "?".repeat(k));
        if total + p.len() > MAX_TOTAL_BYTES || k > 400 {
            break;
        }
        total += p.len();
        blowup.push(p);
    }
    out.push(("*a?{k}*, k = 10.., to the bound", blowup));
    // As many short patterns as a policy may hold (200 folders and 1,000
    // banned-app paths): the cost per pattern.
    out.push(("1200 x *a*b", vec!["*a*b".to_owned(); 1200]));
    // What administrators write.
    let real: Vec<String> = (0..200)
        .map(|i| format!("/srv/share/dept{i}/**"))
        .chain((0..50).map(|i| format!("C:\\Users\\*\\Documents\\Project{i}\\**")))
        .collect();
    out.push(("250 real folders", real));
    out
}

fn main() {
    let paths = [
        ("a{4096}", "a".repeat(4096)),
        ("あ{1365} (4,095 bytes)", "あ".repeat(1365)),
        ("c{4096} (no a, no b)", "c".repeat(4096)),
        (
            "random a/b/'/' {4096}",
            (0..4096u32)
                .map(|i| match (i.wrapping_mul(2_654_435_761) >> 13) % 5 {
                    0 => '/',
                    1 | 2 => 'a',
                    _ => 'b',
                })
                .collect(),
        ),
    ];
    println!(
        "{:<34} {:>5} {:>7} {:>22} {:>14} {:>14}",
        "patterns", "count", "bytes", "path", "glob (old)", "pathglob"
    );
    for (name, patterns) in shapes() {
        let bytes: usize = patterns.iter().map(String::len).sum();
        let compile = Instant::now();
        let set = PathGlobs::new(patterns.iter().map(String::as_str), Case::Sensitive);
        let compile = compile.elapsed();
        let old: Vec<glob::Pattern> = patterns
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        for (pname, path) in &paths {
            let old_t = time_old(&old, path);
            let new_t = match &set {
                Ok(set) => fmt(time_new(set, path)),
                Err(e) => format!("refused: {e}"),
            };
            println!(
                "{name:<34} {:>5} {bytes:>7} {pname:>22} {:>14} {:>14}",
                patterns.len(),
                old_t,
                new_t
            );
        }
        println!("{:<34} compiled in {}", "", fmt(compile));
    }
}

/// The old matcher over every pattern, once; stops after 10 s.
fn time_old(patterns: &[glob::Pattern], path: &str) -> String {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    let start = Instant::now();
    for (i, p) in patterns.iter().enumerate() {
        std::hint::black_box(p.matches_with(path, opts));
        if start.elapsed() > Duration::from_secs(10) {
            return format!(">10 s ({i}/{} done)", patterns.len());
        }
    }
    fmt(start.elapsed())
}

/// The new matcher, the median of 21 runs.
fn time_new(set: &PathGlobs, path: &str) -> Duration {
    let mut runs: Vec<Duration> = (0..21)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(set.matches(path));
            t.elapsed()
        })
        .collect();
    runs.sort();
    runs[runs.len() / 2]
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    }
}
