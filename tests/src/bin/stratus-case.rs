//! `stratus-case NAME TIMEOUT_SECS COMMAND [ARGS...]`
//!
//! Runs one command of a scenario inside the virtual host and reports it on
//! the console in the format of `stratus_tests::case`: a begin line, each
//! output line prefixed with the case name and stream, and an end line with
//! the exit status and the wall time from spawn to exit. Busybox's `date`
//! has no sub-second resolution, hence a binary for the measurement.
//! Always exits 0 once the record is complete, so a scenario goes on to its
//! next case; exits 2 on bad usage.
//!
//! `stratus-case --hold-kvm` instead creates one KVM VM and sleeps forever:
//! the virtual host's `/init` starts it before the scenario so that the
//! kernel code patching KVM does when its first VM appears (and undoes when
//! its last one goes) happens once, at a point where a crash of the
//! virtual host is retried. Multi-threaded TCG occasionally mishandles that
//! patching (an `int3` oops in `__schedule`). The held VM also has an
//! in-kernel LAPIC and one vCPU that never runs: its APIC stays
//! software-disabled, which keeps KVM's `apic_sw_disabled` static key
//! raised for good, so guests that start (LAPIC software-disabled) and
//! enable their APIC no longer flip it and patch the LAPIC code each time
//! (the same TCG fault, seen as an `int3` in `apic_has_pending_timer` or
//! `__apic_accept_irq`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use stratus_tests::case::{self, CaseExit, Stream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold-kvm") {
        hold_kvm();
    }
    let (name, timeout, command) = match args.as_slice() {
        [name, timeout, command @ ..] if !command.is_empty() => match timeout.parse::<u64>() {
            Ok(secs) => (name.clone(), Duration::from_secs(secs), command.to_vec()),
            Err(_) => usage(),
        },
        _ => usage(),
    };
    println!("{}{name}", case::BEGIN);
    let (exit, wall) = run(&name, timeout, &command);
    println!("{}", case::end_line(&name, exit, wall));
}

fn hold_kvm() -> ! {
    let held = kvm_ioctls::Kvm::new()
        .and_then(|kvm| kvm.create_vm())
        .and_then(|vm| {
            vm.create_irq_chip()?;
            let vcpu = vm.create_vcpu(0)?;
            Ok((vm, vcpu))
        });
    match held {
        Ok(_held) => loop {
            // `_held` stays open for as long as the process lives.
            thread::sleep(Duration::from_secs(3600));
        },
        Err(err) => {
            eprintln!("stratus-case: cannot hold a KVM VM: {err}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: stratus-case NAME TIMEOUT_SECS COMMAND [ARGS...]");
    std::process::exit(2);
}

fn run(name: &str, timeout: Duration, command: &[String]) -> (CaseExit, Duration) {
    let start = Instant::now();
    let mut child = match Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            let prefix = case::line_prefix(name, Stream::Stderr);
            println!("{prefix}stratus-case: cannot run {}: {err}", command[0]);
            return (CaseExit::SpawnFailed, start.elapsed());
        }
    };
    let pid = child.id();
    let readers = [
        child
            .stdout
            .take()
            .map(|out| forward(name, Stream::Stdout, out)),
        child
            .stderr
            .take()
            .map(|err| forward(name, Stream::Stderr, err)),
    ];
    // The child is waited for on its own thread so that the timeout needs no
    // polling: polling would steal CPU from the guest being measured.
    let (done_tx, done_rx) = mpsc::channel::<(std::io::Result<ExitStatus>, Instant)>();
    thread::spawn(move || {
        let status = child.wait();
        let _ = done_tx.send((status, Instant::now()));
    });
    let (exit, end) = match done_rx.recv_timeout(timeout) {
        Ok((status, end)) => (exit_of(status), end),
        Err(_) => {
            // `kill` (busybox or coreutils) rather than libc: no unsafe here.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = done_rx.recv();
            (CaseExit::TimedOut, Instant::now())
        }
    };
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    (exit, end - start)
}

fn exit_of(status: std::io::Result<ExitStatus>) -> CaseExit {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => CaseExit::Code(code),
            (None, Some(sig)) => CaseExit::Signal(sig),
            (None, None) => CaseExit::SpawnFailed,
        },
        Err(_) => CaseExit::SpawnFailed,
    }
}

/// Copies `input` to our stdout line by line, each line prefixed and written
/// in one call so lines from the two streams do not interleave mid-line.
fn forward(
    name: &str,
    stream: Stream,
    input: impl Read + Send + 'static,
) -> thread::JoinHandle<()> {
    let prefix = case::line_prefix(name, stream);
    thread::spawn(move || {
        let mut reader = BufReader::new(input);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&raw);
                    let line = format!("{prefix}{}\n", text.trim_end_matches(['\n', '\r']));
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.flush();
                }
            }
        }
    })
}
