//! `stratus-netprobe`: the network half of the end-to-end tests, run
//! inside tiny guests (busybox has no UDP tools and no HTTP client that
//! sets arbitrary methods and headers). Std and libc (for the packet
//! socket `http` reads TTLs with), statically linked.
//!
//! ```text
//! stratus-netprobe serve PORT...            TCP and UDP echo on each PORT, forever
//! stratus-netprobe tcp IP PORT [MS]         connect, send a line, read it back
//! stratus-netprobe udp IP PORT [MS]         send a datagram, wait for the echo
//! stratus-netprobe session IP PORT SECS     one TCP connection for SECS seconds,
//!                                           a line every 250 ms; prints echoes per second
//! stratus-netprobe http IP METHOD PATH [NAME:VALUE]...
//!                                           one HTTP/1.1 request (Connection: close)
//! stratus-netprobe sink PORT                count what arrives: TCP bytes per
//!                                           connection, UDP datagrams per burst
//! stratus-netprobe tcp-blast IP PORT SECS   send as fast as TCP allows for SECS
//! stratus-netprobe udp-blast IP PORT SECS LEN
//!                                           send LEN-byte datagrams for SECS
//! ```
//!
//! Probes print one line, `ok …` or `fail …`, and exit 0 either way (the
//! test reads the line); `http` prints `status=CODE` then `header NAME:
//! VALUE` lines, then `body=` with the body's bytes, escaped on one line,
//! then `reply-ttl=T,T,…`: the IP TTL (IPv6 hop limit) of every segment
//! the server sent, seen by a packet socket (`reply-ttl=unknown` when
//! none could be opened). Bad usage exits 2.

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
        ("sink", [port]) => match port.parse() {
            Ok(port) => sink(port),
            Err(_) => usage(),
        },
        ("tcp-blast", [ip, port, secs]) => match (addr(ip, port), secs.parse()) {
            (Some(a), Ok(secs)) => {
                tcp_blast(a, secs);
                ExitCode::SUCCESS
            }
            _ => usage(),
        },
        ("udp-blast", [ip, port, secs, len]) => {
            match (addr(ip, port), secs.parse(), len.parse::<usize>()) {
                (Some(a), Ok(secs), Ok(len)) if len <= 1472 => {
                    udp_blast(a, secs, len);
                    ExitCode::SUCCESS
                }
                _ => usage(),
            }
        }
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
    // Opened before connecting, so it sees every segment of the reply.
    let capture = capture::PacketSocket::open();
    let mut stream = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            println!("fail connect {e}");
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let host = match to.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
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
    match capture {
        Some(capture) => {
            let ttls: Vec<String> = capture.ttls_from(to).iter().map(u8::to_string).collect();
            println!("reply-ttl={}", ttls.join(","));
        }
        None => println!("reply-ttl=unknown"),
    }
}

/// A packet socket that sees the IP packets the guest receives, to read
/// the TTL a server put on its replies (TCP sockets cannot report it).
mod capture {
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    #[derive(Debug)]
    pub struct PacketSocket(OwnedFd);

    impl PacketSocket {
        /// A non-blocking `AF_PACKET`/`SOCK_DGRAM` socket for every
        /// protocol (it reads packets without their link header); `None`
        /// without `CAP_NET_RAW`.
        pub fn open() -> Option<Self> {
            let all = u16::try_from(libc::ETH_P_ALL).ok()?.to_be();
            // SAFETY: socket(2) takes no pointers; the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from(all),
                )
            };
            if fd < 0 {
                return None;
            }
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            Some(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        /// The TTL (hop limit) of every queued TCP segment from `from`,
        /// in arrival order.
        pub fn ttls_from(&self, from: SocketAddr) -> Vec<u8> {
            let mut ttls = Vec::new();
            let mut buf = [0u8; 2048];
            loop {
                // SAFETY: `buf` is valid for writes of its whole length.
                let n = unsafe {
                    libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                let Ok(n) = usize::try_from(n) else { break };
                if n == 0 {
                    break;
                }
                if let Some(ttl) = tcp_ttl(&buf[..n], from) {
                    ttls.push(ttl);
                }
            }
            ttls
        }
    }

    /// The TTL of `packet` if it is a TCP segment from `from`.
    fn tcp_ttl(packet: &[u8], from: SocketAddr) -> Option<u8> {
        const TCP: u8 = 6;
        let (ttl, l4) = match (packet.first()? >> 4, from.ip()) {
            (4, IpAddr::V4(ip)) if packet.len() >= 20 => {
                let header = usize::from(packet[0] & 0x0f) * 4;
                let ok = packet[9] == TCP && packet[12..16] == ip.octets();
                (ok.then_some(packet[8])?, packet.get(header..)?)
            }
            // No extension headers: the server's replies have none.
            (6, IpAddr::V6(ip)) if packet.len() >= 40 => {
                let ok = packet[6] == TCP && packet[8..24] == ip.octets();
                (ok.then_some(packet[7])?, &packet[40..])
            }
            _ => return None,
        };
        let port = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
        (port == from.port()).then_some(ttl)
    }
}

/// Counts what arrives on `port`: each TCP connection's bytes and rate
/// when it closes (`tcp bytes=N secs=S mbit_s=R`), and UDP datagrams in
/// bursts (`udp datagrams=N secs=S pps=R`, printed once a second of
/// silence ends a burst). Never returns.
fn sink(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            println!("fail bind {e}");
            return ExitCode::SUCCESS;
        }
    };
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                let mut start = None;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            start.get_or_insert_with(Instant::now);
                            total += n as u64;
                        }
                    }
                }
                let secs = start.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
                let rate = if secs > 0.0 {
                    total as f64 * 8.0 / secs / 1e6
                } else {
                    0.0
                };
                println!("tcp bytes={total} secs={secs:.3} mbit_s={rate:.1}");
            });
        }
    });
    let socket = match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(s) => s,
        Err(e) => {
            println!("fail bind {e}");
            return ExitCode::SUCCESS;
        }
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
    println!("sinking");
    let mut buf = [0u8; 2048];
    loop {
        let mut count = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        loop {
            match socket.recv_from(&mut buf) {
                Ok(_) => {
                    last = Instant::now();
                    first.get_or_insert(last);
                    count += 1;
                }
                Err(_) if count > 0 => break,
                Err(_) => {}
            }
        }
        let secs = first.map_or(0.0, |f: Instant| (last - f).as_secs_f64());
        let pps = if secs > 0.0 { count as f64 / secs } else { 0.0 };
        println!("udp datagrams={count} secs={secs:.3} pps={pps:.0}");
    }
}

fn tcp_blast(to: SocketAddr, secs: u64) {
    let mut stream = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            println!("fail connect {e}");
            return;
        }
    };
    let buf = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        match stream.write(&buf) {
            Ok(n) => total += n as u64,
            Err(e) => {
                println!("fail write {e}");
                return;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tcp-blast bytes={total} secs={secs:.3} mbit_s={:.1}",
        total as f64 * 8.0 / secs / 1e6
    );
}

fn udp_blast(to: SocketAddr, secs: u64, len: usize) {
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => {
            println!("fail bind {e}");
            return;
        }
    };
    let buf = vec![0x5au8; len];
    let start = Instant::now();
    let (mut sent, mut failed) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..64 {
            match socket.send_to(&buf, to) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "udp-blast sent={sent} failed={failed} secs={secs:.3} pps={:.0}",
        sent as f64 / secs
    );
}
