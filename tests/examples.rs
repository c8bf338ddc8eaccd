//! Every example script runs and every derivative in it passes `--check`.

use assert_cmd::Command;

#[test]
fn every_example_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "mdiff") {
            for conventions in [&[][..], &["--layout", "numerator", "--vec", "col"][..]] {
                let out = Command::cargo_bin("matdiff")
                    .expect("binary")
                    .arg("--check")
                    .args(conventions)
                    .arg(&path)
                    .output()
                    .expect("runs");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{}: {}\n{}",
                    path.display(),
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(stdout.contains("checked: largest relative error"), "{}", path.display());
                assert!(!stdout.contains("FAILED"));
            }
            n += 1;
        }
    }
    assert!(n >= 4, "expected the example scripts, found {n}");
}
