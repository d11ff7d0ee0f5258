//! Faults of the real kube-apiserver for the chaos tests: stop it (SIGKILL) and start it
//! again with the same command line, on the same etcd (so every object, Role and Receiver
//! survives) and the same port and certificates.
// A test harness: a restart that fails is a test failure.
#![allow(clippy::panic)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kube_env::KubeEnv;

/// Stops and restarts the apiserver of one [`KubeEnv`]. The restarted process is written
/// to the run directory's `apiserver.pid`, so `kube-down.sh` (on the env's drop) stops it.
pub struct ApiserverControl {
    dir: PathBuf,
    argv: Vec<OsString>,
    /// The process this control started (the first one belongs to kube-up.sh).
    child: Option<Child>,
}

impl ApiserverControl {
    /// Reads the running apiserver's command line from `/proc/<pid>/cmdline`.
    pub fn new(env: &KubeEnv) -> ApiserverControl {
        let dir = env.dir().to_path_buf();
        let pid = pid(&dir);
        let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|error| panic!("cannot read the apiserver's command line: {error}"));
        let argv: Vec<OsString> = raw
            .split(|byte| *byte == 0)
            .filter(|part| !part.is_empty())
            .map(|part| OsString::from_vec(part.to_vec()))
            .collect();
        assert!(
            argv.first()
                .is_some_and(|program| program.to_string_lossy().contains("kube-apiserver")),
            "pid {pid} in apiserver.pid is not kube-apiserver: {argv:?}"
        );
        ApiserverControl {
            dir,
            argv,
            child: None,
        }
    }

    /// SIGKILL, and wait until the process is gone (its port is free again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        let pid = pid(&self.dir);
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "apiserver {pid} still alive 10 s after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the apiserver hangs (connections open, nothing answered) until
    /// [`ApiserverControl::resume`]. A stopped process still dies on the SIGKILL that
    /// `kube-down.sh` sends after its SIGTERM times out.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`ApiserverControl::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = pid(&self.dir);
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap_or_else(|error| panic!("kill {signal} {pid}: {error}"));
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Starts the apiserver again with the same arguments (log appended to apiserver.log)
    /// and waits until `/readyz` answers `ok` to the admin client.
    pub async fn start(&mut self, env: &KubeEnv) -> Duration {
        assert!(self.child.is_none(), "the apiserver is already running");
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("apiserver.log"))
            .unwrap_or_else(|error| panic!("apiserver.log: {error}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|error| panic!("apiserver.log: {error}"));
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot restart kube-apiserver: {error}"));
        if let Err(error) = std::fs::write(self.dir.join("apiserver.pid"), child.id().to_string()) {
            panic!("cannot write apiserver.pid: {error}");
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new());
            let ready = match request {
                Ok(request) => env
                    .admin()
                    .request_text(request)
                    .await
                    .is_ok_and(|body| body.trim() == "ok"),
                Err(_) => false,
            };
            if ready {
                return started.elapsed();
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the restarted kube-apiserver exited ({status}); see {}",
                    self.dir.join("apiserver.log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the restarted kube-apiserver was not ready within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn pid(dir: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(dir.join("apiserver.pid"))
        .unwrap_or_else(|error| panic!("no apiserver.pid in {}: {error}", dir.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|error| panic!("apiserver.pid {text:?}: {error}"))
}

/// Running and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
