//! deploy/systemd/: the unit file passes `systemd-analyze verify` (and a broken copy does not),
//! and the real binary speaks the notification protocol of `Type=notify` to a `NOTIFY_SOCKET`
//! the test binds: `READY=1` only once the hub answers, watchdog pings (which never stall the
//! hub when nobody reads them), `STOPPING=1` on SIGTERM, and no `READY=1` from a hub that fails
//! to start.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::binary::ssehub_command;
use crate::support::tools::{free_port, repo_path, run, serve_env_names, text};
use crate::support::SECRET;

const UNIT: &str = "deploy/systemd/ssehub.service";

/// The shipped unit with its `ExecStart` pointed at the binary under test, so that verify can
/// check that the command exists (it does not at /usr/local/bin here), written into `dir`.
fn unit_copy(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(repo_path(UNIT)).expect("read the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/ssehub "), "{unit}");
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/ssehub ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_ssehub")),
    );
    let path = dir.join(name);
    std::fs::write(&path, edit(unit)).expect("write the unit");
    path
}

/// `systemd-analyze verify`: clean means success AND nothing printed, since it reports an
/// unknown key or a bad value as a warning and still exits 0.
fn verify(path: &Path) -> Result<(), String> {
    let output = run(Command::new("systemd-analyze").arg("verify").arg(path));
    if output.status.success() && output.stdout.is_empty() && output.stderr.is_empty() {
        Ok(())
    } else {
        Err(text(&output))
    }
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify_and_a_broken_one_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_copy(dir.path(), "ssehub.service", |u| u);
    if let Err(report) = verify(&unit) {
        panic!("systemd-analyze verify {UNIT}:\n{report}");
    }
    // The check can fail: a misspelt key, a bad value.
    for (name, from, to) in [
        (
            "typo.service",
            "ProtectSystem=strict",
            "ProtectSystm=strict",
        ),
        ("badtype.service", "Type=notify", "Type=notfy"),
    ] {
        let broken = unit_copy(dir.path(), name, |u| u.replace(from, to));
        assert!(verify(&broken).is_err(), "{to} passed verify");
    }
    // The sandboxing scores "OK" (under 2.0 on systemd's 0-10 exposure scale).
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit));
    assert!(security.status.success(), "{}", text(&security));
    // What the unit promises.
    let text = std::fs::read_to_string(&unit).expect("read");
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=ssehub",
        "Environment=SSEHUB_DATA_DIR=/var/lib/ssehub",
        "LimitNOFILE=",
        "WatchdogSec=",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line} missing from {UNIT}"
        );
    }
    // Every SSEHUB_ variable it sets is a setting of `ssehub serve`.
    let names = serve_env_names();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Environment=SSEHUB_") {
            let name = format!("SSEHUB_{}", rest.split('=').next().unwrap_or_default());
            assert!(names.contains(&name), "{name} is not a setting: {names:?}");
        }
    }
}

/// The messages received on `socket` until `want` is among them, or `limit` passed.
fn receive_until(socket: &UnixDatagram, want: &str, limit: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m == want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want} within {limit:?}; got {seen:?}");
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_once_the_hub_answers_then_watchdog_pings_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    // A port of the test's choosing, so it can connect the moment READY=1 arrives, without
    // waiting for the log line that names the address.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = ssehub_command()
        .args(["serve", "--jwt-key", SECRET, "--anonymous"])
        .args(["--shutdown-timeout", "1s"])
        .env("SSEHUB_ADDR", &addr)
        .env("SSEHUB_DATA_DIR", dir.path().join("data"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssehub");
    let guard = KillOnDrop(&mut child);

    let mut seen = Vec::new();
    let (socket, connected) = tokio::task::block_in_place(|| {
        receive_until(&socket, "READY=1", Duration::from_secs(20), &mut seen);
        // At once, on this thread: a READY=1 sent before the listener was bound (even a few
        // milliseconds early) finds the port closed.
        (socket, std::net::TcpStream::connect(&addr))
    });
    // Kept open and silent to the end: shutdown must not wait for it past --shutdown-timeout.
    let _silent = match connected {
        Ok(stream) => stream,
        Err(e) => panic!("READY=1 arrived before the hub listened on {addr}: {e}"),
    };
    // Ready means answering, at once: no retry here.
    let ready = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("the hub answers when READY=1 arrives");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        seen.iter().filter(|m| *m == "READY=1").count(),
        1,
        "{seen:?}"
    );
    assert!(!seen.iter().any(|m| m == "STOPPING=1"), "{seen:?}");

    // WatchdogSec=200ms: pings every 100 ms.
    let socket = tokio::task::block_in_place(|| {
        receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
        socket
    });
    // A receiver that stops reading (a stalled service manager): the kernel queues a few
    // datagrams, then a send would block. The hub must go on serving, and still stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("http://{addr}/readyz")),
    )
    .await
    .expect("the hub answers within 5 s while systemd does not read")
    .expect("the hub answers while systemd does not read");
    assert_eq!(answer.status(), 200);

    let pid = guard.0.id().to_string();
    let status = run(Command::new("kill").args(["-TERM", &pid]));
    assert!(status.status.success());
    tokio::task::block_in_place(|| {
        receive_until(&socket, "STOPPING=1", Duration::from_secs(5), &mut seen);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    assert_eq!(
        seen.iter().filter(|m| *m == "READY=1").count(),
        1,
        "{seen:?}"
    );
}

#[test]
fn a_sighup_reload_says_reloading_with_the_monotonic_clock_then_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    let mut child = ssehub_command()
        .args(["serve", "--jwt-key", SECRET, "--history", "memory"])
        .env("SSEHUB_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssehub");
    let guard = KillOnDrop(&mut child);
    let mut seen = Vec::new();
    receive_until(&socket, "READY=1", Duration::from_secs(20), &mut seen);
    assert!(!seen.iter().any(|m| m == "RELOADING=1"), "{seen:?}");
    let pid = guard.0.id().to_string();
    assert!(run(Command::new("kill").args(["-HUP", &pid]))
        .status
        .success());
    receive_until(&socket, "RELOADING=1", Duration::from_secs(5), &mut seen);
    // Type=notify-reload wants MONOTONIC_USEC in the same message as RELOADING=1.
    let at = seen.iter().position(|m| m == "RELOADING=1").expect("seen");
    let usec = seen
        .get(at + 1)
        .and_then(|m| m.strip_prefix("MONOTONIC_USEC="));
    assert!(
        usec.is_some_and(|u| u.parse::<u64>().is_ok_and(|u| u > 0)),
        "{seen:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.iter().filter(|m| *m == "READY=1").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no READY=1 after the reload: {seen:?}"
        );
        let mut more = Vec::new();
        receive_until(&socket, "READY=1", Duration::from_secs(5), &mut more);
        seen.extend(more);
    }
    // The reload did not stop the hub.
    assert!(guard.0.try_wait().expect("try_wait").is_none());
}

#[test]
fn a_hub_that_cannot_open_its_history_never_says_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    // A data directory that cannot be made: its parent is a file. (An unreachable Redis no
    // longer stops the start: the hub serves and spools until Redis answers.)
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let output = run(ssehub_command()
        .args(["serve", "--jwt-key", SECRET])
        .env("SSEHUB_ADDR", "127.0.0.1:0")
        .env("SSEHUB_DATA_DIR", blocker.join("data"))
        .env("NOTIFY_SOCKET", &path));
    assert!(!output.status.success(), "{}", text(&output));
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "a message from a hub that failed to start: {:?}",
            other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        ),
    }
}

/// Kills the child by its PID if the test ends before it exited.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
