//! Replays the fuzz inputs kept in the repository through the fuzz targets' own bodies
//! (`ssehub::fuzzing`): every file under `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`
//! (minimized crash inputs the fuzzer found). A panic, which is how a target reports a broken
//! property, fails the test and names the file. Fuzzing itself is `scripts/fuzz`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ssehub::fuzzing::{Target, TARGETS};

/// The `fuzz/` directory of this repository.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly inside `dir` (none when it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file in `dir`; returns how many ran and the files that panicked.
fn replay(target: Target, dir: &Path) -> (usize, Vec<PathBuf>) {
    let files = inputs(dir);
    let panicked = files
        .iter()
        .filter(|file| {
            let bytes = std::fs::read(file).expect("read input");
            catch_unwind(AssertUnwindSafe(|| target(&bytes))).is_err()
        })
        .cloned()
        .collect();
    (files.len(), panicked)
}

/// The names of the subdirectories of `dir`.
fn subdirectories(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.expect("directory entry").path())
                .filter(|path| path.is_dir())
                .map(|path| {
                    path.file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_seed_and_regression_input_passes_its_fuzz_target() {
    let fuzz = fuzz_dir();
    assert!(fuzz.is_dir(), "{} not found", fuzz.display());
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let (seeds, panicked) = replay(*target, &fuzz.join("seeds").join(name));
        assert!(seeds > 0, "fuzz/seeds/{name}/ holds no input");
        failures.extend(panicked);
        let (regressions, panicked) = replay(*target, &fuzz.join("regressions").join(name));
        failures.extend(panicked);
        eprintln!("fuzz target {name}: replayed {seeds} seeds and {regressions} regression inputs");
    }
    assert!(failures.is_empty(), "inputs that panicked: {failures:#?}");
}

#[test]
fn fuzz_directories_and_targets_agree() {
    let fuzz = fuzz_dir();
    let known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let mut binaries: Vec<String> = inputs(&fuzz.join("fuzz_targets"))
        .iter()
        .map(|path| {
            path.file_stem()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    binaries.sort();
    let mut sorted = known.clone();
    sorted.sort();
    assert_eq!(
        binaries, sorted,
        "fuzz/fuzz_targets/*.rs vs ssehub::fuzzing::TARGETS"
    );
    // A directory named after no target would never be replayed.
    for kind in ["seeds", "regressions"] {
        for dir in subdirectories(&fuzz.join(kind)) {
            assert!(
                known.contains(&dir.as_str()),
                "fuzz/{kind}/{dir}/ names no target"
            );
        }
    }
}

#[test]
fn replay_reports_the_input_that_panics() {
    fn fragile(bytes: &[u8]) {
        assert_ne!(bytes, b"boom", "a broken property");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fine"), b"fine").expect("write");
    std::fs::write(dir.path().join("crash"), b"boom").expect("write");
    let (count, panicked) = replay(fragile, dir.path());
    assert_eq!(count, 2);
    assert_eq!(panicked, vec![dir.path().join("crash")]);
}
