//! `fluxrelay serve` as a child process (killed on drop), its `/metrics`, and peak RSS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct ServeProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServeProcess {
    /// Starts `<profile dir>/fluxrelay serve --config <config> [extra]` and waits for its
    /// "listening" line. Its log (JSON, info level, as a deployment would run it) is read
    /// and dropped, so writing it costs what it costs in production.
    pub fn start(config: &Path, extra: &[&str]) -> ServeProcess {
        let binary = crate::profile_dir().join("fluxrelay");
        let mut command = match std::env::var("FLUXRELAY_BENCH_SERVE_WRAP") {
            Ok(wrap) => {
                let mut words = wrap.split_whitespace();
                let mut command = Command::new(words.next().unwrap_or("env"));
                command.args(words).arg(&binary);
                command
            }
            Err(_) => Command::new(&binary),
        };
        // Its own process group, so a profiler wrapper and the serve it runs stop together.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, listening) = mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            let mut head = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(sender) = &found {
                    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if parsed["message"] == "listening" {
                        let addr = parsed["addr"].as_str().unwrap_or_default().to_string();
                        let _ = sender.send(Ok(addr));
                        found = None;
                    } else if head.len() < 40 {
                        head.push(line);
                    }
                }
            }
            if let Some(sender) = found {
                let _ = sender.send(Err(head.join("\n")));
            }
        });
        match listening.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => ServeProcess {
                child,
                addr: addr.parse().expect("listening address"),
            },
            Ok(Err(log)) => panic!("fluxrelay serve exited before listening:\n{log}"),
            Err(_) => panic!("fluxrelay serve printed no \"listening\" line within 30 s"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ServeProcess {
    /// Kills the whole group: killing only a wrapper (`FLUXRELAY_BENCH_SERVE_WRAP`) left
    /// its serve running, and the next stage measured next to it. A wrapped serve gets
    /// SIGTERM first, so a profiler can write its data.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal_group = |signal: &str| {
            let _ = std::process::Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        if std::env::var_os("FLUXRELAY_BENCH_SERVE_WRAP").is_some() {
            signal_group("-TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` (peak resident set) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The RSS the process has now (`VmRSS`), as against its peak.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// How many sockets the process holds open (its listener, its clients' pooled connections).
pub fn open_sockets(pid: u32) -> Option<usize> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        fds.filter_map(Result::ok)
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count(),
    )
}

/// One scrape of serve's `/metrics`: the samples named `name` with all their labels.
pub struct Scrape(String);

impl Scrape {
    pub async fn get(client: &reqwest::Client, serve: &ServeProcess) -> Scrape {
        let text = client
            .get(serve.url("/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics body");
        Scrape(text)
    }

    /// The sum of the samples of `name` whose label set contains every `labels` pair.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter(|(series, _)| {
                let (sample, rest) = series.split_once('{').unwrap_or((series, ""));
                sample == name
                    && labels
                        .iter()
                        .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
            })
            .filter_map(|(_, value)| value.parse::<f64>().ok())
            .sum()
    }

    /// Messages visible or in flight on `queue` ("intake" or "dispatch").
    pub fn depth(&self, queue: &str) -> f64 {
        ["visible", "in_flight"]
            .iter()
            .map(|state| {
                self.sum(
                    "fluxrelay_queue_messages",
                    &[("queue", queue), ("state", state)],
                )
            })
            .sum()
    }
}
