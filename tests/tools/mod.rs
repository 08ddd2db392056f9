//! What a test does when a host tool (or data) it needs is missing. Run by
//! hand, it says `skipped: …` and passes, so a developer without QEMU can
//! still run the rest; under `just test` and CI, which set
//! `VMLAB_REQUIRE_TOOLS=1`, it fails naming what is missing, so a tier can
//! never pass without having run.

/// Set to `1` by the justfile's `test` recipe.
pub const REQUIRE: &str = "VMLAB_REQUIRE_TOOLS";

/// `true` when the test can run; `false` (after a `skipped:` line) when
/// `missing` says why not; a panic instead when tools are required.
pub fn ready(missing: Option<String>) -> bool {
    let required = std::env::var_os(REQUIRE).is_some_and(|v| v == "1");
    match (missing, required) {
        (None, _) => true,
        (Some(why), true) => panic!("{why}; this tier needs it ({REQUIRE}=1)"),
        (Some(why), false) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// Why `program`, which `scripts/setup` installs, cannot be run: it is not
/// on the PATH.
pub fn missing(program: &str) -> Option<String> {
    which::which(program)
        .is_err()
        .then(|| format!("`{program}` is not installed (scripts/setup installs it)"))
}
