//! The README's "Run it locally" section, followed literally: its serve command (with the
//! built binary in place of `cargo run ... --`), its curl command, and the outcome it
//! promises in the log and on /metrics. Runs in a private network namespace, so the
//! README's fixed port 127.0.0.1:8080 is free.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluxrelay_testkit::netns;

const CARGO_RUN: &str = "cargo run --locked -p fluxrelay-cli --";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The code blocks of one README section, in order.
fn code_blocks(readme: &str, section: &str) -> Vec<String> {
    let start = readme
        .find(section)
        .unwrap_or_else(|| panic!("README has no {section:?}"));
    let rest = &readme[start + section.len()..];
    let rest = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    rest.split("```")
        .skip(1)
        .step_by(2)
        .map(|block| {
            block
                .trim_start_matches(|c: char| c.is_alphanumeric())
                .trim()
                .to_string()
        })
        .collect()
}

/// Kills the server if the test fails, so no process outlives it holding its output.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS"])
        .args(args)
        .output()
        .expect("curl is needed (tests/env/setup.sh installs it)");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_readme_quick_start_works_as_written() {
    if !netns::enter("the_readme_quick_start_works_as_written") {
        return;
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = code_blocks(&readme, "## Run it locally");
    let serve = blocks[0].clone();
    assert!(serve.starts_with(CARGO_RUN), "{serve}");
    let curl_block = blocks[1].clone();
    assert!(curl_block.starts_with("curl "), "{curl_block}");

    // A fresh network namespace starts with loopback down.
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2) is needed");
    assert!(up.success(), "ip link set lo up failed");
    let state = std::env::temp_dir().join(format!("fluxrelay-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let args: Vec<&str> = serve[CARGO_RUN.len()..].split_whitespace().collect();
    let child = Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args(&args)
        .current_dir(repo_root())
        .env("XDG_STATE_HOME", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new("curl")
        .args(["-sf", "http://127.0.0.1:8080/healthz"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "fluxrelay serve did not answer /healthz"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let answer = Command::new("bash")
        .arg("-c")
        .arg(&curl_block)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer.stdout).into_owned();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains("\"status\":\"accepted\""), "{answer}");
    let metrics = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = curl(&["http://127.0.0.1:8080/metrics"]);
            if metrics.contains("fluxrelay_queue_messages{queue=\"intake\",state=\"visible\"} 0")
                || Instant::now() > deadline
            {
                break metrics;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for name in [
        "fluxrelay_webhooks_received_total 1",
        "fluxrelay_pushes_accepted_total 1",
        "fluxrelay_trigger_latency_seconds",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    assert_eq!(curl(&["http://127.0.0.1:8080/healthz"]), "ok\n");

    let status = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.0.wait().unwrap();
    let mut log = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    for promised in [
        "outcome=\"accepted\"",
        "outcome=\"routed\"",
        "clusters=\"(no cluster subscribes)\"",
        "stopped",
    ] {
        assert!(
            log.contains(promised),
            "the README promises {promised:?} in the log:\n{log}"
        );
    }
    assert!(
        state.join("fluxrelay/queue.sqlite").exists(),
        "the default data directory follows XDG_STATE_HOME"
    );
    let _ = std::fs::remove_dir_all(&state);
}
