//! What the tests of the real agent binary share: an agent started on a
//! loopback port with a state directory of its own (killed, and the
//! links it made removed, on drop), a raw HTTP/1.1 client over
//! `TcpStream`, and a fake AMI bundle.
//!
//! Each test binary (`api.rs`, `cli.rs`, `reporting.rs`) compiles this module on its own
//! and uses a different part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW stratus-test-key";

/// Whether this process may make bridges; under CI it must.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the agent's API tests need root (bridges) and CI runs as root"
        );
        eprintln!("skipping: the agent's API tests need root to make bridges");
    }
    root
}

/// A running agent with its own state directory; killed and its bridges
/// removed on drop, pass or fail.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub addr: String,
    pub token: String,
    /// Links (bridges, taps) the test saw the agent make.
    pub bridges: Vec<String>,
    /// More arguments for the agent.
    pub args: Vec<String>,
}

impl Agent {
    pub fn start(name: &str) -> Agent {
        Agent::start_with_args(name, &[])
    }

    pub fn start_with_args(name: &str, args: &[&str]) -> Agent {
        let dir =
            std::env::temp_dir().join(format!("stratus-agent-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut agent = Agent {
            child: None,
            dir,
            addr: String::new(),
            token: String::new(),
            bridges: Vec::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        agent.spawn();
        agent
    }

    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratus-agent"))
            .envs(env.iter().copied())
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stratus-agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.addr = line
            .trim()
            .strip_prefix("stratus-agent: listening on ")
            .unwrap_or_else(|| panic!("agent said {line:?}"))
            .to_string();
        self.token = std::fs::read_to_string(self.dir.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        self.child = Some(child);
    }

    /// `kill -9`, then a new agent on the same state directory.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn();
    }

    /// One request; (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.raw(
            method,
            path,
            body.map(Value::to_string).as_deref(),
            Some(&self.token),
        )
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let text = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // Bodies come in one chunk or with a Content-Length; a chunked
        // body's framing lines are not JSON, so take the JSON part.
        let json_part = text.find(['{', '[']).map_or("", |i| &text[i..]);
        let json_part = json_part.rfind(['}', ']']).map_or("", |j| &json_part[..=j]);
        (
            status,
            serde_json::from_str(json_part).unwrap_or(Value::Null),
        )
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, v) = self.call(method, path, body.as_ref());
        assert_eq!(status, want, "{method} {path}: {v}");
        v
    }

    /// `GET path` without the token; (status, head, body as text).
    pub fn get_open(&self, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (status, head.to_string(), body.to_string())
    }

    /// Polls instance `id` until it is in `state` (within 30 s).
    /// What a launch needs: the test AMI bundle registered, a subnet on
    /// `cidr` (its bridge removed on drop) and a security group `g`.
    pub fn launch_fixture(&mut self, cidr: &str) -> LaunchFixture {
        let image = self.ok(
            "POST",
            "/v1/images",
            Some(json!({"manifest_path": bundle(&self.dir)})),
            201,
        );
        let subnet = self.ok(
            "POST",
            "/v1/subnets",
            Some(json!({ "cidr_block": cidr })),
            201,
        );
        self.bridges
            .push(subnet["bridge"].as_str().unwrap().to_string());
        let group = self.ok(
            "POST",
            "/v1/security-groups",
            Some(json!({"group_name": "g", "description": "d"})),
            201,
        );
        LaunchFixture {
            image_id: image["image_id"].clone(),
            subnet_id: subnet["subnet_id"].clone(),
            group_id: group["group_id"].clone(),
        }
    }

    pub fn wait_for_state(&self, id: &str, state: &str) -> Value {
        self.wait_for(id, state, |inst| inst["state"] == state)
    }

    /// Instance `id` once the launcher has started its VMM (a run or
    /// start answers before that).
    pub fn wait_for_vmm(&self, id: &str) -> Value {
        self.wait_for(id, "a VMM", |inst| inst["process"]["pid"].is_i64())
    }

    /// Instance `id` once `done` holds for it (30 s at most).
    pub fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let inst = self.ok("GET", &format!("/v1/instances/{id}"), None, 200);
            if done(&inst) {
                return inst;
            }
            assert!(Instant::now() < deadline, "never {what}: {inst}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The ids [`Agent::launch_fixture`] made.
#[allow(dead_code)] // Not every test binary launches.
pub struct LaunchFixture {
    pub image_id: Value,
    pub subnet_id: Value,
    pub group_id: Value,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for b in &self.bridges {
            let _ = Command::new("ip").args(["link", "del", b]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn bundle(dir: &std::path::Path) -> String {
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("disk.qcow2"), b"QFI\xfb").unwrap();
    let manifest = b.join("manifest.json");
    std::fs::write(
        &manifest,
        r#"{"id": "ami-0123456789abcdef0", "name": "debian-12", "architecture": "x86_64",
            "root_device": {"image": "disk.qcow2", "format": "qcow2"},
            "boot_mode": "direct-kernel-from-disk", "kernel_cmdline": "console=ttyS0"}"#,
    )
    .unwrap();
    manifest.to_string_lossy().into_owned()
}
