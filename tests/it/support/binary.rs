//! The real `ssehub` binary, started on port 0 and stopped by its PID, with an environment of
//! the test's making (no `SSEHUB_*` variable of the caller's shell gets through).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::redis::RedisServer;
use super::SECRET;

/// Removes every `SSEHUB_*` variable of this process's environment from `command`, so that a
/// developer's shell (`SSEHUB_HISTORY`, `SSEHUB_CONFIG`, …) cannot change what a test starts:
/// the binary sees only the variables the test sets.
pub fn clear_ssehub_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SSEHUB_") {
            command.env_remove(name);
        }
    }
}

/// `ssehub` (the binary under test) with [`clear_ssehub_env`] applied: every test that runs the
/// binary starts it through this.
pub fn ssehub_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssehub"));
    clear_ssehub_env(&mut command);
    command
}

pub struct BinaryHub {
    pub child: Child,
    /// The data directory, removed on drop unless the test passed its own.
    pub data_dir: std::path::PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
    pub addr: SocketAddr,
    pub url: String,
    /// Log lines after the "listening" one.
    pub logs: mpsc::Receiver<String>,
}

impl BinaryHub {
    /// Runs `ssehub serve --addr 127.0.0.1:0 ARGS` with `env` and a fresh data directory, and
    /// waits for its bound address.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut hub = Self::start_in(dir.path(), args, env);
        hub._owned_dir = Some(dir);
        hub
    }

    /// Runs a hub whose history (and so its fan-out between instances) is in `redis`
    /// (`--history redis --redis-url …`), with the test secret and anonymous subscribers, and
    /// `extra` settings after those: the instance every multi-instance test starts.
    pub fn start_on_redis(redis: &RedisServer, extra: &[&str]) -> Self {
        Self::start(&on_redis_args(&redis.url(), extra), &[])
    }

    /// Like [`Self::start_on_redis`], with the data directory `data_dir` (kept after drop), so
    /// that a restarted instance finds its spool.
    pub fn start_in_on_redis(
        data_dir: &std::path::Path,
        redis: &RedisServer,
        extra: &[&str],
    ) -> Self {
        Self::start_in(data_dir, &on_redis_args(&redis.url(), extra), &[])
    }

    /// Like [`Self::start`], with the data directory `data_dir` (kept after drop).
    pub fn start_in(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = ssehub_command();
        command
            .arg("serve")
            .args(args)
            .env("SSEHUB_ADDR", "127.0.0.1:0")
            .env("SSEHUB_DATA_DIR", data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn ssehub");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
                // Stop it before failing, so a failed start leaves no process behind.
                let _ = child.kill();
                let _ = child.wait();
                panic!("ssehub did not log its address within 20 s");
            };
            // Text logs say `addr=…`, JSON logs `"addr":"…"`.
            if let Some(rest) = line.split("addr=").nth(1) {
                let addr = rest.split_whitespace().next().expect("address");
                break addr.parse().expect("socket address");
            }
            if let Some(rest) = line.split("\"addr\":\"").nth(1) {
                let addr = rest.split('"').next().expect("address");
                break addr.parse().expect("socket address");
            }
        };
        Self {
            child,
            data_dir: data_dir.to_owned(),
            _owned_dir: None,
            addr,
            url: format!("http://{addr}/.well-known/mercure"),
            logs: rx,
        }
    }

    /// Sends SIGTERM by PID.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL by PID: a crash, as far as the hub can tell.
    pub fn crash(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The arguments of [`BinaryHub::start_on_redis`]: the Redis ones, then `extra`.
fn on_redis_args<'a>(redis_url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--jwt-key",
        SECRET,
        "--anonymous",
        "--history",
        "redis",
        "--redis-url",
        redis_url,
    ];
    args.extend_from_slice(extra);
    args
}

impl Drop for BinaryHub {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
