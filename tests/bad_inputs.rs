//! Bad inputs: every script in `tests/cases/bad/` must fail with exit status 1,
//! print no answer for the line that fails, and explain itself on stderr with
//! the file, line and column, the offending text underlined, and what was
//! expected. The messages are pinned by snapshots in `snapshots/bad_*.snap`.
//!
//! Inputs too large (or too binary) to commit are generated here.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary from the crate root, so that file names in messages are
/// the relative names given on the command line.
fn matdiff(args: &[&str]) -> Run {
    let out = Command::cargo_bin("matdiff")
        .expect("the matdiff binary")
        .current_dir(crate_dir())
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("matdiff runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, text);
    });
}

/// `error at FILE:LINE:COL: ...` → (LINE, COL).
fn error_location(stderr: &str, file: &str) -> Option<(usize, usize)> {
    let first = stderr.lines().next()?;
    let rest = first.strip_prefix(&format!("error at {file}:"))?;
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.parse().ok()?;
    let col = parts.next()?.parse().ok()?;
    parts.next().filter(|m| !m.trim().is_empty())?;
    Some((line, col))
}

/// Checks the shape of one failure; returns a description of what is wrong.
fn check_failure(file: &str, src: &str, run: &Run) -> Result<(), String> {
    if run.code != Some(1) {
        return Err(format!("exit status {:?}, expected 1\nstderr:\n{}", run.code, run.stderr));
    }
    let Some((line, col)) = error_location(&run.stderr, file) else {
        return Err(format!("stderr does not start with `error at {file}:LINE:COL: message`:\n{}", run.stderr));
    };
    let lines: Vec<&str> = src.split('\n').collect();
    if line == 0 || line > lines.len() || col == 0 || col > lines[line - 1].chars().count() + 1 {
        return Err(format!("location {line}:{col} is outside the script"));
    }
    // The offending text is shown and underlined (or pointed at).
    if !run.stderr.contains(['┬', '▲']) {
        return Err(format!("no underline in the message:\n{}", run.stderr));
    }
    if run.stderr.contains("panicked") || run.stderr.contains("internal") {
        return Err(format!("internal failure:\n{}", run.stderr));
    }
    // No answer for the failing statement: whatever was printed must also be
    // printed by the script cut just before that statement.
    let line_start: usize = lines[..line - 1].iter().map(|l| l.len() + 1).sum();
    let at = line_start + lines[line - 1].char_indices().nth(col - 1).map_or(lines[line - 1].len(), |(i, _)| i);
    let cut = src[..at].rfind(['\n', ';']).map_or(0, |i| i + 1);
    let good = matdiff(&["-e", &src[..cut]]);
    if good.code != Some(0) {
        return Err(format!("the lines before the error fail too:\n{}", good.stderr));
    }
    if !good.stdout.starts_with(&run.stdout) {
        return Err(format!(
            "stdout has more than the answers of the lines before the error:\n{}\nversus\n{}",
            run.stdout, good.stdout
        ));
    }
    Ok(())
}

fn bad_cases() -> Vec<PathBuf> {
    let dir = crate_dir().join("tests/cases/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/cases/bad")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "mdiff"))
        .collect();
    files.sort();
    files
}

#[test]
fn bad_scripts_fail_with_clear_messages() {
    let cases = bad_cases();
    assert!(cases.len() >= 45, "expected at least 45 bad cases, found {}", cases.len());
    let mut failures = Vec::new();
    for path in &cases {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_string();
        let rel = format!("tests/cases/bad/{stem}.mdiff");
        let src = std::fs::read_to_string(path).expect("readable case");
        let run = matdiff(&[&rel]);
        if let Err(why) = check_failure(&rel, &src, &run) {
            failures.push(format!("{rel}: {why}"));
        }
        let snap = std::panic::catch_unwind(|| snapshot(&format!("bad_{stem}"), &run.stderr));
        if snap.is_err() {
            failures.push(format!("{rel}: stderr differs from snapshots/bad_{stem}.snap"));
        }
    }
    assert!(failures.is_empty(), "{} bad case(s) misbehave:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// A scratch directory for generated inputs, replaced in messages by `<tmp>`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bad_inputs_{tag}_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }

    fn run(&self, path: &Path) -> Run {
        let mut r = matdiff(&[path.to_str().expect("UTF-8 temp path")]);
        let dir = self.0.to_str().expect("UTF-8 temp path");
        r.stderr = r.stderr.replace(dir, "<tmp>");
        r
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn deep_parentheses_are_refused_without_overflow() {
    let tmp = Scratch::new("deep");
    let src = format!("x: n\ny = {}x{}\n", "(".repeat(10_000), ")".repeat(10_000));
    let path = tmp.write("deep_parentheses.mdiff", src.as_bytes());
    let run = tmp.run(&path);
    check_failure("<tmp>/deep_parentheses.mdiff", &src, &run).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.stderr.len() < 4_000, "the message repeats too much of the input:\n{}", run.stderr);
    snapshot("bad_generated_deep_parentheses", &run.stderr);
}

#[test]
fn deep_unclosed_parentheses_are_refused() {
    let tmp = Scratch::new("unclosed");
    let src = format!("x: n\ny = {}x\n", "(".repeat(10_000));
    let path = tmp.write("deep_unclosed.mdiff", src.as_bytes());
    let run = tmp.run(&path);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.len() < 4_000, "the message repeats too much of the input:\n{}", run.stderr);
    snapshot("bad_generated_deep_unclosed_parentheses", &run.stderr);
}

#[test]
fn megabyte_line_is_refused_briefly() {
    let tmp = Scratch::new("long");
    let mut src = String::from("A: 2 x 2\nB = A");
    while src.len() < (1 << 20) {
        src.push_str(" + A");
    }
    src.push('\n');
    let path = tmp.write("long_line.mdiff", src.as_bytes());
    let run = tmp.run(&path);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.len() < 4_000, "the message repeats too much of the input ({} bytes)", run.stderr.len());
    snapshot("bad_generated_megabyte_line", &run.stderr);
}

#[test]
fn invalid_utf8_is_refused() {
    let tmp = Scratch::new("utf8");
    let path = tmp.write("invalid_utf8.mdiff", b"A: 2 x 2\nB = A \xff\xfe A\n");
    let run = tmp.run(&path);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("<tmp>/invalid_utf8.mdiff"), "{}", run.stderr);
    snapshot("bad_generated_invalid_utf8", &run.stderr);
}

#[test]
fn missing_file_is_an_input_error() {
    let run = matdiff(&["tests/cases/bad/no_such_file.mdiff"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("tests/cases/bad/no_such_file.mdiff"), "{}", run.stderr);
}

#[test]
fn unknown_format_is_a_usage_error() {
    let run = matdiff(&["--format", "nope", "tests/cases/ok/empty.mdiff"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn unknown_option_is_a_usage_error() {
    let run = matdiff(&["--no-such-option", "tests/cases/ok/empty.mdiff"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[test]
fn empty_script_succeeds_silently() {
    for args in [&["tests/cases/ok/empty.mdiff"][..], &["tests/cases/ok/comments_only.mdiff"], &["-e", ""]] {
        let run = matdiff(args);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn the_first_error_stops_the_run() {
    // Two scripts: the second is not run after the first fails.
    let run = matdiff(&["tests/cases/bad/unknown_name.mdiff", "tests/cases/ok/empty.mdiff"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stderr.matches("error at").count(), 1, "{}", run.stderr);
}
