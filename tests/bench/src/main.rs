//! `fluxrelay-bench`: fluxrelay's benchmarks over real parts, with a report and SVG plots.
//!
//! `cargo run --release -p fluxrelay-bench` measures everything (minutes) and rewrites the
//! generated part of `BENCHMARKS.md` and the plots under `docs/bench/`;
//! `cargo run -p fluxrelay-bench -- --smoke` runs every stage briefly (seconds) and writes
//! its report under the target directory, so the benchmark cannot rot. Numbers from a debug
//! build are not benchmark results.
//!
//! It builds the binaries it measures (`fluxrelay`, `ingest`, `route`, `dispatch`,
//! `confirm`) in its own profile — and in a release run the Lambda functions through `sam
//! build` as well, whose artifacts are then the ones measured (`sam_build.rs`) — then
//! re-runs itself inside a private network namespace (`unshare -n`), where the real
//! kube-apiserver, the Flux receiver emulator (192.0.2.10) and moto run.

// A benchmark harness: a broken environment is a failure with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod coldstart;
mod confirm_bench;
mod cost;
mod fanout;
mod fleet;
mod fleet_route;
mod kube_load;
mod moto_time;
mod plot;
mod poller;
mod report;
mod sam_build;
mod serve_bench;
mod serve_proc;
mod sqs_path;
mod sqs_stub;
mod stats;
mod template;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use fluxrelay_testkit::netns::in_private_namespace;

use crate::report::Report;

/// Set in the re-run child, so it never re-runs itself again.
const MARKER: &str = "FLUXRELAY_BENCH_NETNS";

/// How long and how big each stage is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub smoke: bool,
    /// Seconds of load in the throughput stage.
    pub load_secs: f64,
    /// Concurrent connections of the load generator.
    pub load_connections: usize,
    /// Durable and ceiling loads run back to back after the first of each, for the median
    /// ratio.
    pub ratio_pairs: usize,
    /// Connection counts of one more durable and one more ceiling load each: the two
    /// throughputs as curves against the load's concurrency.
    pub load_sweep: &'static [usize],
    /// Pushes timed one after another in the latency stage.
    pub latency_pushes: usize,
    /// The two cluster counts of the latency stage.
    pub latency_clusters: [usize; 2],
    /// Pushes in the coalescing burst, and the clusters that receive it.
    pub burst_pushes: usize,
    pub burst_clusters: usize,
    /// Clusters in the fan-out stage.
    pub fanout: &'static [usize],
    /// Warm pushes averaged in the apiserver load stage.
    pub warm_pushes: usize,
    /// Cold starts timed per Lambda binary, and invocations before peak RSS is read.
    pub cold_starts: usize,
    pub invocations: usize,
    /// Clusters registered in the fleet stage (serve, dispatch, route, registry read).
    pub fleet: &'static [usize],
    /// Larger fleets for route and the registry read alone (on the counting SQS stub).
    pub fleet_route_only: &'static [usize],
    /// Pushes per fleet size in serve (the first untimed), and timed repeats elsewhere.
    pub fleet_pushes: usize,
    pub fleet_reps: usize,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            smoke: false,
            load_secs: 10.0,
            load_connections: 32,
            ratio_pairs: 4,
            load_sweep: &[8, 16, 32, 64, 128],
            latency_pushes: 200,
            latency_clusters: [1, 20],
            burst_pushes: 100,
            burst_clusters: 20,
            fanout: &[10, 100, 1000],
            warm_pushes: 5,
            cold_starts: 10,
            invocations: 200,
            fleet: &[1, 10, 100, 1000],
            fleet_route_only: &[10_000],
            fleet_pushes: 4,
            fleet_reps: 5,
        }
    }

    fn smoke() -> Scale {
        Scale {
            smoke: true,
            load_secs: 1.0,
            load_connections: 4,
            ratio_pairs: 1,
            load_sweep: &[2, 8],
            latency_pushes: 5,
            latency_clusters: [1, 2],
            burst_pushes: 10,
            burst_clusters: 2,
            fanout: &[10],
            warm_pushes: 1,
            cold_starts: 1,
            invocations: 5,
            fleet: &[1, 10],
            fleet_route_only: &[100],
            fleet_pushes: 2,
            fleet_reps: 1,
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>`: where the binaries it measures are built.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running benchmark's path");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory");
    target.join(profile_name())
}

/// The profile of the measured binaries: this binary's own, or release with
/// `--release-binaries` (passed on to the re-run in the namespace like every argument).
pub fn profile_name() -> &'static str {
    if cfg!(debug_assertions) && RELEASE_BINARIES.get().is_none() {
        "debug"
    } else {
        "release"
    }
}

static RELEASE_BINARIES: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Progress on stderr, with the time since the start.
pub fn progress(message: impl std::fmt::Display) {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:>7.1} s] {message}", start.elapsed().as_secs_f64());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut smoke = false;
    let mut only: Option<Stage> = None;
    let mut out: Option<PathBuf> = None;
    let mut fleet_sizes: Option<&'static [usize]> = None;
    let mut connections: Option<usize> = None;
    let mut sam = true;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--out" => out = iter.next().map(PathBuf::from),
            "--only" => match iter.next().map(String::as_str) {
                Some("throughput") => only = Some(Stage::Throughput),
                Some("latency") => only = Some(Stage::Latency),
                Some("coalescing") => only = Some(Stage::Coalescing),
                Some("lambdas") => only = Some(Stage::Lambdas),
                Some("fleet") => only = Some(Stage::Fleet),
                other => {
                    eprintln!(
                        "fluxrelay-bench: --only takes throughput, latency, coalescing, lambdas or fleet, got {other:?}"
                    );
                    return ExitCode::from(2);
                }
            },
            // Measure release binaries from a debug build of the benchmark (whose own load
            // generator is then slower than in release).
            // The fleet stage at these sizes only (and no route-only sizes): one point of
            // the curve, to measure a change.
            "--fleet-sizes" => {
                let parsed: Option<Vec<usize>> = iter.next().and_then(|list| {
                    list.split(',')
                        .map(|size| size.trim().parse().ok().filter(|n| *n > 0))
                        .collect()
                });
                let Some(sizes) = parsed else {
                    eprintln!(
                        "fluxrelay-bench: --fleet-sizes takes a comma-separated list of cluster counts, e.g. 1000 or 10,100"
                    );
                    return ExitCode::from(2);
                };
                fleet_sizes = Some(Vec::leak(sizes));
            }
            // The throughput stage's load at this many connections (its default is 32).
            "--connections" => {
                let Some(count) = iter
                    .next()
                    .and_then(|count| count.parse().ok())
                    .filter(|count: &usize| *count > 0)
                else {
                    eprintln!(
                        "fluxrelay-bench: --connections takes a count of at least 1, e.g. 64"
                    );
                    return ExitCode::from(2);
                };
                connections = Some(count);
            }
            // Measure the cargo build's Lambda binaries instead of `sam build`'s.
            "--no-sam-build" => sam = false,
            "--release-binaries" => {
                let _ = RELEASE_BINARIES.set(());
            }
            "-h" | "--help" => {
                println!(
                    "usage: fluxrelay-bench [--smoke] [--only throughput|latency|coalescing|lambdas|fleet] [--out DIR] [--release-binaries] [--no-sam-build] [--fleet-sizes N[,N…]] [--connections N]\n  full (release): rewrites BENCHMARKS.md's generated section and docs/bench/*.svg\n  --smoke: every stage briefly; report in DIR (default <target>/bench-smoke)\n  --only: that stage alone (ingest throughput and its ceiling, latency and its floor, coalescing, or the Lambda\n          binaries' cold start, memory and size); report in DIR (default <target>/bench-only), BENCHMARKS.md untouched\n  --fleet-sizes: the fleet stage at these cluster counts only (e.g. --only fleet --fleet-sizes 1000)\n  --connections: with --only throughput, its loads at N connections (default 32) but the curve's, which\n          is measured at its own counts either way; a full run always judges the ratio at 32\n  --no-sam-build: a release run measures the Lambda binaries `sam build` makes (x86_64, cargo-lambda);\n          this measures the cargo build's instead"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("fluxrelay-bench: unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    // A full run rewrites BENCHMARKS.md, whose judged ratio is read at the default count.
    if connections.is_some() && only != Some(Stage::Throughput) {
        eprintln!("fluxrelay-bench: --connections goes with --only throughput");
        return ExitCode::from(2);
    }
    if !in_private_namespace() {
        // What deploys is what SAM builds: a release run that measures Lambda binaries
        // measures those (not the smoke run, which stays seconds, and not a debug one).
        let measures_lambdas = matches!(only, None | Some(Stage::Lambdas | Stage::Fleet));
        let sam = sam && !smoke && profile_name() == "release" && measures_lambdas;
        return build_then_rerun_in_namespace(&args, sam);
    }
    // A new namespace's loopback is down; kube-up.sh brings it up, but a stage without the
    // apiserver (`--only lambdas`: moto alone) runs before anything else would.
    match Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
    {
        Ok(status) if status.success() => {}
        other => {
            eprintln!("fluxrelay-bench: cannot bring up loopback in the namespace: {other:?}");
            return ExitCode::FAILURE;
        }
    }
    let mut scale = if smoke { Scale::smoke() } else { Scale::full() };
    if let Some(sizes) = fleet_sizes {
        scale.fleet = sizes;
        scale.fleet_route_only = &[];
    }
    if let Some(count) = connections {
        scale.load_connections = count;
    }
    let out = out.unwrap_or_else(|| {
        if smoke {
            profile_dir().join("bench-smoke")
        } else if only.is_some() {
            profile_dir().join("bench-only")
        } else {
            workspace_root().join("docs/bench")
        }
    });
    std::fs::create_dir_all(&out).expect("create the report directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(async {
        match only {
            None => run(scale, &out).await,
            Some(stage) => run_only(stage, scale, &out).await,
        }
    });
    let markdown = report.markdown();
    let file = match only {
        None => "report.md",
        Some(Stage::Throughput) => "report-throughput.md",
        Some(Stage::Latency) => "report-latency.md",
        Some(Stage::Coalescing) => "report-coalescing.md",
        Some(Stage::Lambdas) => "report-lambdas.md",
        Some(Stage::Fleet) => "report-fleet.md",
    };
    std::fs::write(out.join(file), &markdown).expect("write the report");
    println!("{markdown}");
    // One stage's report would replace every other stage's numbers in BENCHMARKS.md.
    if !smoke && only.is_none() {
        let benchmarks = workspace_root().join("BENCHMARKS.md");
        report::splice_into(&benchmarks, &markdown).expect("update BENCHMARKS.md");
        progress(format!("updated {}", benchmarks.display()));
    }
    progress(format!("report and plots in {}", out.display()));
    ExitCode::SUCCESS
}

/// A stage run alone (`--only`), to measure one change without the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Throughput,
    Latency,
    Coalescing,
    Lambdas,
    Fleet,
}

async fn run_only(stage: Stage, scale: Scale, out: &Path) -> Report {
    let mut report = Report::new(scale);
    match stage {
        Stage::Throughput => {
            let setup = serve_bench::Setup::start(&scale).await;
            serve_bench::throughput(&setup, &scale, out, &mut report).await;
        }
        Stage::Latency => {
            let setup = serve_bench::Setup::start(&scale).await;
            serve_bench::latency(&setup, &scale, out, &mut report).await;
        }
        Stage::Coalescing => {
            let setup = serve_bench::Setup::start(&scale).await;
            serve_bench::coalescing(&setup, &scale, &mut report).await;
        }
        Stage::Lambdas => {
            let moto = fluxrelay_testkit::moto::Moto::start();
            coldstart::lambdas(&moto, &scale, &mut report).await;
        }
        Stage::Fleet => {
            let setup = serve_bench::Setup::start(&scale).await;
            let moto = fluxrelay_testkit::moto::Moto::start();
            fleet::fleet(&setup, &moto, &scale, out, &mut report).await;
        }
    }
    report
}

async fn run(scale: Scale, out: &Path) -> Report {
    let mut report = Report::new(scale);
    let setup = serve_bench::Setup::start(&scale).await;
    serve_bench::throughput(&setup, &scale, out, &mut report).await;
    serve_bench::latency(&setup, &scale, out, &mut report).await;
    serve_bench::coalescing(&setup, &scale, &mut report).await;
    kube_load::apiserver_requests(&setup, &scale, &mut report).await;
    let confirmed = confirm_bench::confirmation(&setup, &scale, &mut report).await;
    let moto = fluxrelay_testkit::moto::Moto::start();
    let measured = sqs_path::latency(&setup, &moto, &scale, &mut report).await;
    report.section(
        "Cost model (estimate)",
        cost::markdown(&measured, &template::Settings::read()),
    );
    report.section(
        "Cost model: the confirmation stage (estimate)",
        cost::confirm_markdown(&confirmed, &measured),
    );
    fanout::fan_out(&moto, &scale, &mut report).await;
    coldstart::lambdas(&moto, &scale, &mut report).await;
    fleet::fleet(&setup, &moto, &scale, out, &mut report).await;
    drop(setup);
    report
}

/// Outside the namespace: build what is measured (in this binary's profile), then run
/// this binary again under `unshare -n`, passing its output through.
fn build_then_rerun_in_namespace(args: &[String], sam: bool) -> ExitCode {
    if std::env::var_os(MARKER).is_some() {
        eprintln!(
            "fluxrelay-bench: {MARKER} is set but this is not a private network namespace; refusing to listen on host addresses"
        );
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(workspace_root()).args([
        "build",
        "--locked",
        "-p",
        "fluxrelay-cli",
        "-p",
        "fluxrelay-ingest",
        "-p",
        "fluxrelay-route",
        "-p",
        "fluxrelay-dispatch",
        "-p",
        "fluxrelay-confirm",
    ]);
    if profile_name() == "release" {
        build.arg("--release");
    }
    // The binaries must land next to this one, whatever target directory cargo used.
    let target_dir = profile_dir()
        .parent()
        .expect("target directory")
        .to_path_buf();
    build.env("CARGO_TARGET_DIR", &target_dir);
    progress(format!(
        "building the measured binaries ({} profile)",
        profile_name()
    ));
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!("fluxrelay-bench: building the measured binaries failed ({status})");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("fluxrelay-bench: cannot run cargo: {error}");
            return ExitCode::FAILURE;
        }
    }
    let mut rerun = Command::new("unshare");
    if sam {
        match sam_build::build(&workspace_root(), &target_dir) {
            Ok(dir) => {
                rerun.env(sam_build::ARTIFACTS_ENV, dir);
            }
            Err(error) => {
                eprintln!("fluxrelay-bench: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    progress("entering a private network namespace (unshare -n)");
    let exe = std::env::current_exe().expect("the running benchmark's path");
    let status = rerun
        .arg("-n")
        .arg("--")
        .arg(exe)
        .args(args)
        .env(MARKER, "1")
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("fluxrelay-bench: the run in the namespace failed ({status})");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!(
                "fluxrelay-bench: cannot run `unshare -n` ({error}); run as root or with user namespaces enabled"
            );
            ExitCode::FAILURE
        }
    }
}
