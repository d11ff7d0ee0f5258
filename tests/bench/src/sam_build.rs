//! The deploy build, measured (issue 15, item 6): the release run builds the Lambda
//! functions with `sam build` — the template's own `rust-cargolambda` metadata, SAM's
//! builder, cargo-lambda from PyPI — and the Lambda stages exec those very `bootstrap`
//! files, so what is measured is what deploys, and a change that breaks the deploy build
//! breaks the benchmark.
//!
//! It runs outside the network namespace (before the re-run), for x86_64: the template
//! deploys arm64 by default, and this machine has no aarch64 target. The artifacts' place
//! reaches the re-run through [`ARTIFACTS_ENV`].

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set for the re-run: the `sam build` directory whose artifacts the stages measure.
pub const ARTIFACTS_ENV: &str = "FLUXRELAY_BENCH_SAM_BUILD";

/// cargo-lambda, pinned: SAM's `rust-cargolambda` builder runs `cargo lambda build`.
const CARGO_LAMBDA: &str = "cargo-lambda==1.9.2";

/// Each Lambda binary and its function in `template.yaml`.
const FUNCTIONS: [(&str, &str); 4] = [
    ("ingest", "IngestFunction"),
    ("route", "RouteFunction"),
    ("dispatch", "DispatchFunction"),
    ("confirm", "ConfirmFunction"),
];

/// The Lambda binary the stages exec: `sam build`'s artifact when this run built one,
/// else the cargo build's.
pub fn lambda_binary(binary: &str) -> PathBuf {
    match (
        std::env::var_os(ARTIFACTS_ENV),
        FUNCTIONS.iter().find(|(name, _)| *name == binary),
    ) {
        (Some(dir), Some((_, function))) => Path::new(&dir).join(function).join("bootstrap"),
        _ => crate::profile_dir().join(binary),
    }
}

/// Where the measured binary came from, for the report's labels.
pub fn origin() -> &'static str {
    if std::env::var_os(ARTIFACTS_ENV).is_some() {
        "`sam build`, release"
    } else if crate::profile_name() == "release" {
        "release profile, stripped"
    } else {
        "debug profile, not stripped"
    }
}

/// `sam build` of the template's functions into `<target>/sam-build`, cargo-lambda
/// installed into the tools' virtualenv first when it is missing. Returns the build
/// directory, or why it failed.
pub fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let sam = std::env::var_os("FLUXRELAY_SAM")
        .map(PathBuf::from)
        .ok_or("FLUXRELAY_SAM is not set: source the test environment (tests/env/setup.sh prints how), or pass --no-sam-build")?;
    let venv_bin = sam
        .parent()
        .ok_or("FLUXRELAY_SAM has no directory")?
        .to_path_buf();
    if !venv_bin.join("cargo-lambda").is_file() {
        crate::progress(format!(
            "installing {CARGO_LAMBDA} into {} (SAM's Rust builder runs it; ~100 MB with Zig)",
            venv_bin.display()
        ));
        let status = Command::new(venv_bin.join("pip"))
            .args([
                "install",
                "--no-input",
                "--disable-pip-version-check",
                CARGO_LAMBDA,
            ])
            .status()
            .map_err(|error| format!("cannot run pip: {error}"))?;
        if !status.success() {
            return Err(format!(
                "pip install {CARGO_LAMBDA} failed ({status}); is PyPI reachable?"
            ));
        }
    }
    let build_dir = target_dir.join("sam-build");
    let path = std::env::join_paths(std::iter::once(venv_bin.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .map_err(|error| format!("PATH: {error}"))?;
    crate::progress(format!(
        "sam build (x86_64, release, cargo-lambda) into {}: the Lambda stages measure these artifacts",
        build_dir.display()
    ));
    let status = Command::new(&sam)
        .current_dir(workspace)
        .args(["build", "--template-file", "template.yaml", "--build-dir"])
        .arg(&build_dir)
        .args([
            "--parameter-overrides",
            "Architecture=x86_64",
            "--beta-features",
        ])
        .env("PATH", path)
        .env("SAM_CLI_TELEMETRY", "0")
        .env("SAM_CLI_BETA_RUST_CARGO_LAMBDA", "1")
        // Its own cargo target directory: cargo-lambda builds for an explicit target triple
        // with its own linker settings, so nothing would be shared with target/release.
        .env("CARGO_TARGET_DIR", target_dir.join("sam-cargo"))
        .status()
        .map_err(|error| format!("cannot run {}: {error}", sam.display()))?;
    if !status.success() {
        return Err(format!("sam build failed ({status})"));
    }
    for (binary, function) in FUNCTIONS {
        let artifact = build_dir.join(function).join("bootstrap");
        if !artifact.is_file() {
            return Err(format!(
                "sam build succeeded but left no {} (the {binary} binary)",
                artifact.display()
            ));
        }
    }
    Ok(build_dir)
}
