//! `stratus-netprobe`: the network half of the end-to-end tests, run
//! inside tiny guests (busybox has no UDP tools and no HTTP client that
//! sets arbitrary methods and headers). Std only, statically linked.
//!
//! ```text
//! stratus-netprobe serve PORT...            TCP and UDP echo on each PORT, forever
//! stratus-netprobe tcp IP PORT [MS]         connect, send a line, read it back
//! stratus-netprobe udp IP PORT [MS]         send a datagram, wait for the echo
//! stratus-netprobe session IP PORT SECS     one TCP connection for SECS seconds,
//!                                           a line every 250 ms; prints echoes per second
//! stratus-netprobe http IP METHOD PATH [NAME:VALUE]...
//!                                           one HTTP/1.1 request (Connection: close)
//! ```
//!
//! Probes print one line, `ok …` or `fail …`, and exit 0 either way (the
//! test reads the line); `http` prints `status=CODE` then `header NAME:
//! VALUE` lines, then `body=` with the body's bytes, escaped on one line.
//! Bad usage exits 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!("usage: stratus-netprobe serve PORT... | tcp IP PORT [MS] | udp IP PORT [MS] | session IP PORT SECS | http IP METHOD PATH [NAME:VALUE]...");
    ExitCode::from(2)
}

fn addr(ip: &str, port: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

fn millis(arg: Option<&String>, default: u64) -> Duration {
    Duration::from_millis(arg.and_then(|a| a.parse().ok()).unwrap_or(default))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return usage();
    };
    match (command.as_str(), &args[1..]) {
        ("serve", ports) if !ports.is_empty() => serve(ports),
        ("tcp", [ip, port, rest @ ..]) => match addr(ip, port) {
            Some(a) => {
                println!("{}", tcp_probe(a, millis(rest.first(), 3000)));
                ExitCode::SUCCESS
            }
            None => usage(),
        },
        ("udp", [ip, port, rest @ ..]) => match addr(ip, port) {
            Some(a) => {
                println!("{}", udp_probe(a, millis(rest.first(), 3000)));
                ExitCode::SUCCESS
            }
            None => usage(),
        },
        ("session", [ip, port, secs]) => match (addr(ip, port), secs.parse()) {
            (Some(a), Ok(secs)) => {
                session(a, secs);
                ExitCode::SUCCESS
            }
            _ => usage(),
        },
        ("http", [ip, method, path, headers @ ..]) => match addr(ip, "80") {
            Some(a) => {
                http(a, method, path, headers);
                ExitCode::SUCCESS
            }
            None => usage(),
        },
        _ => usage(),
    }
}

/// Echo servers, TCP and UDP, on every port; never returns.
fn serve(ports: &[String]) -> ExitCode {
    let mut threads = Vec::new();
    for port in ports {
        let Ok(port) = port.parse::<u16>() else {
            return usage();
        };
        match TcpListener::bind(("0.0.0.0", port)) {
            Ok(listener) => threads.push(thread::spawn(move || tcp_echo(listener))),
            Err(e) => eprintln!("tcp {port}: {e}"),
        }
        match UdpSocket::bind(("0.0.0.0", port)) {
            Ok(socket) => threads.push(thread::spawn(move || udp_echo(socket))),
            Err(e) => eprintln!("udp {port}: {e}"),
        }
    }
    println!("serving");
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn tcp_echo(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut reader = BufReader::new(&stream);
            let mut writer = &stream;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if writer.write_all(line.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        });
    }
}

fn udp_echo(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        let _ = socket.send_to(&buf[..n], from);
    }
}

fn tcp_probe(to: SocketAddr, timeout: Duration) -> String {
    let stream = match TcpStream::connect_timeout(&to, timeout) {
        Ok(s) => s,
        Err(e) => return format!("fail connect {e}"),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut writer = &stream;
    if let Err(e) = writer.write_all(b"probe\n") {
        return format!("fail write {e}");
    }
    let mut line = String::new();
    match BufReader::new(&stream).read_line(&mut line) {
        Ok(_) if line == "probe\n" => "ok".into(),
        Ok(_) => format!("fail echo {line:?}"),
        Err(e) => format!("fail read {e}"),
    }
}

fn udp_probe(to: SocketAddr, timeout: Duration) -> String {
    let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = match UdpSocket::bind(local) {
        Ok(s) => s,
        Err(e) => return format!("fail bind {e}"),
    };
    let _ = socket.set_read_timeout(Some(timeout));
    if let Err(e) = socket.send_to(b"probe", to) {
        return format!("fail send {e}");
    }
    let mut buf = [0u8; 64];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) if from == to && &buf[..n] == b"probe" => "ok".into(),
        Ok((n, from)) => format!("fail echo {n} bytes from {from}"),
        Err(e) => format!("fail recv {e}"),
    }
}

/// Holds one connection, sending a line every 250 ms and counting the
/// echoes that came back in each second: `second=N echoed=M`.
fn session(to: SocketAddr, secs: u64) {
    let stream = match TcpStream::connect_timeout(&to, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            println!("fail connect {e}");
            return;
        }
    };
    println!("ok connected");
    let reader = stream.try_clone();
    let (tx, rx) = std::sync::mpsc::channel();
    if let Ok(reader) = reader {
        thread::spawn(move || {
            let mut lines = BufReader::new(reader).lines();
            while let Some(Ok(_)) = lines.next() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    let start = Instant::now();
    let mut writer = &stream;
    for second in 0..secs {
        for _ in 0..4 {
            let _ = writer.write_all(b"tick\n");
            thread::sleep(Duration::from_millis(250));
        }
        let echoed = rx.try_iter().count();
        println!(
            "second={second} echoed={echoed} t={:.1}",
            start.elapsed().as_secs_f64()
        );
    }
}

/// One HTTP/1.1 request; prints the status, the headers and the body.
fn http(to: SocketAddr, method: &str, path: &str, headers: &[String]) {
    let mut stream = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            println!("fail connect {e}");
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", to.ip());
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        println!("fail write {e}");
        return;
    }
    let mut response = Vec::new();
    if let Err(e) = stream.read_to_end(&mut response) {
        if response.is_empty() {
            println!("fail read {e}");
            return;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0");
    println!("status={status}");
    for line in lines {
        println!("header {line}");
    }
    println!("body={}", body.escape_default());
}
