//! A private network namespace for tests that need the kube-apiserver environment.
//!
//! Only inside one can the fake receiver's address 192.0.2.10 exist and the apiserver's
//! loopback ports stay private to the test. A test calls [`enter`] first; outside a
//! namespace it re-runs itself under `unshare -n` and reports the child's result.
// A test harness: a missing or broken environment fails the test that asked for it.
#![allow(clippy::panic)]

use std::process::{Command, Stdio};

/// Set in the re-run child, so it never re-runs itself again.
const MARKER: &str = "FLUXRELAY_NETNS";

/// At the start of a test: true = we are inside a private network namespace, run the body;
/// false = we were not, so the current test binary was re-run for just this test under
/// `unshare -n` (with FLUXRELAY_NETNS=1, `<test name> --exact --nocapture --test-threads=1`),
/// its output passed through and its success asserted (panics with the child's status otherwise).
pub fn enter(test_name: &str) -> bool {
    if in_private_namespace() {
        return true;
    }
    assert!(
        std::env::var_os(MARKER).is_none(),
        "{MARKER} is set but this process shares the host's network namespace; refusing to run {test_name} (it would listen on host addresses)"
    );
    check_unshare();
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => panic!("cannot find the running test binary to re-run {test_name}: {error}"),
    };
    let output = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(&binary)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(MARKER, "1")
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("could not run `unshare -n` for {test_name}: {error}"),
    };
    // Through the test harness's capture: shown for a failing test, or with --nocapture.
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "{test_name} failed inside its private network namespace ({}); its output is above",
        output.status
    );
    // A misspelt name would run no test at all and "pass".
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "re-running {test_name} inside a private network namespace ran no test: pass the test function's exact name to netns::enter"
    );
    false
}

/// Our network namespace is not PID 1's and holds no interface but `lo` (the same test
/// `tests/env/kube-up.sh` makes), so nothing we listen on or send can leave the machine.
pub fn in_private_namespace() -> bool {
    let namespace = |path| std::fs::read_link(path).ok();
    let ours = namespace("/proc/self/ns/net");
    if ours.is_none() || ours == namespace("/proc/1/ns/net") {
        return false;
    }
    // /proc/self/net/dev lists this process's namespace (unlike /sys/class/net, which
    // shows the namespace sysfs was mounted in).
    let Ok(devices) = std::fs::read_to_string("/proc/self/net/dev") else {
        return false;
    };
    devices
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .all(|name| name.trim() == "lo")
}

/// Fails with what to do when `unshare` is missing or may not create namespaces here.
fn check_unshare() {
    let probe = Command::new("unshare")
        .args(["-n", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`unshare` not found: install util-linux (apt-get install util-linux); tests that need the kube-apiserver run in a private network namespace"
        ),
        Err(error) => panic!("could not run `unshare`: {error}"),
        Ok(output) if !output.status.success() => panic!(
            "`unshare -n` is not permitted here ({}: {}); run the tests as root, or with user namespaces enabled, or run the whole test command under `unshare -n`",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Ok(_) => {}
    }
}
