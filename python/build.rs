//! Fingerprints the Rust sources the extension is built from (the engine's
//! `src/` and `grammar/`, and these bindings' `src/`) as
//! `MATDIFF_SOURCE_HASH`: FNV-1a (64-bit) over each file's path relative to
//! the repository, a NUL, its bytes and a NUL, in sorted path order. The
//! tests (python/tests/conftest.py) compute the same over the working tree
//! and refuse to run against an extension built from other sources.

use std::path::{Path, PathBuf};

const DIRS: [&str; 3] = ["src", "grammar", "python/src"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = here.parent().expect("python/ is inside the repository").to_path_buf();
    let mut all = Vec::new();
    for d in DIRS {
        println!("cargo:rerun-if-changed={}", root.join(d).display());
        files(&root.join(d), &mut all);
    }
    let mut named: Vec<(String, PathBuf)> = all
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&root).ok()?;
            let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            Some((parts.join("/"), p))
        })
        .collect();
    named.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, path) in &named {
        eat(name.as_bytes());
        eat(&[0]);
        eat(&std::fs::read(path).unwrap_or_default());
        eat(&[0]);
    }
    let hash = if named.is_empty() { "unknown".to_string() } else { format!("{h:016x}") };
    println!("cargo:rustc-env=MATDIFF_SOURCE_HASH={hash}");
}
