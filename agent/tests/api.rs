//! The agent as a user runs it: the real binary on a loopback port with a
//! state directory of its own, driven over HTTP. Every route is called
//! with good and bad input; bad input gets a 4xx with a JSON error and
//! changes nothing; state survives a `kill -9` and restart; subnets make
//! and remove real bridges on the host (so these tests need root and
//! iproute2, as the agent does; without root they say so and skip, and
//! under CI they fail).
//!
//! The HTTP client is a few lines over `TcpStream` (HTTP/1.1, one request
//! per connection): the tests need no client library, and the agent's
//! server is the real one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW stratus-test-key";

/// Whether this process may make bridges; under CI it must.
fn privileged() -> bool {
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
struct Agent {
    child: Option<Child>,
    dir: PathBuf,
    addr: String,
    token: String,
    /// Bridges the test saw the agent make.
    bridges: Vec<String>,
}

impl Agent {
    fn start(name: &str) -> Agent {
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
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratus-agent"))
            .envs(env.iter().copied())
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0"])
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
    fn crash_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn();
    }

    /// One request; (status, JSON body or Null).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.raw(
            method,
            path,
            body.map(Value::to_string).as_deref(),
            Some(&self.token),
        )
    }

    fn raw(
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

    fn ok(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, v) = self.call(method, path, body.as_ref());
        assert_eq!(status, want, "{method} {path}: {v}");
        v
    }
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

fn bridge_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An error answer: status, and the code in the body.
fn assert_error(
    agent: &Agent,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
    code: &str,
) {
    let (got, v) = agent.raw(method, path, body, Some(&agent.token));
    assert_eq!(got, status, "{method} {path} {body:?}: {v}");
    assert_eq!(v["error"]["code"], code, "{method} {path} {body:?}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

fn bundle(dir: &std::path::Path) -> String {
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

#[test]
fn resources_round_trip_survive_kill_9_and_refuse_bad_input() {
    if !privileged() {
        return;
    }
    let mut agent = Agent::start("round-trip");

    // Open routes and authentication.
    let (status, health) = agent.raw("GET", "/v1/health", None, None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(agent.raw("GET", "/v1/images", None, None).0, 401);
    assert_eq!(agent.raw("GET", "/v1/images", None, Some("wrong")).0, 401);
    assert_error(&agent, "GET", "/v1/nothing", None, 404, "UnknownRoute");
    assert_error(
        &agent,
        "PUT",
        "/v1/images",
        Some("{}"),
        405,
        "UnsupportedOperation",
    );

    // Images.
    let manifest = bundle(&agent.dir);
    let image = agent.ok(
        "POST",
        "/v1/images",
        Some(json!({"manifest_path": manifest})),
        201,
    );
    let image_id = image["image_id"].as_str().unwrap().to_string();
    assert!(image_id.starts_with("ami-"), "{image}");
    assert_eq!(image["state"], "available");
    assert_error(
        &agent,
        "POST",
        "/v1/images",
        Some(&json!({"manifest_path": manifest}).to_string()),
        409,
        "InvalidAMIName.Duplicate",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/images",
        Some(r#"{"manifest_path": "/nonexistent/m.json"}"#),
        400,
        "InvalidParameterValue",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/images",
        Some(r#"{"manifest": "x"}"#),
        400,
        "InvalidRequest",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/images",
        Some("not json"),
        400,
        "InvalidRequest",
    );
    assert_error(
        &agent,
        "GET",
        "/v1/images/ami-0000000000000000a",
        None,
        404,
        "InvalidAMIID.NotFound",
    );
    assert_error(
        &agent,
        "GET",
        "/v1/images/nope",
        None,
        400,
        "InvalidAMIID.Malformed",
    );

    // Key pairs.
    let key = agent.ok(
        "POST",
        "/v1/key-pairs",
        Some(json!({"key_name": "ops", "public_key_material": KEY})),
        201,
    );
    assert!(key["key_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    assert_error(
        &agent,
        "POST",
        "/v1/key-pairs",
        Some(&json!({"key_name": "ops", "public_key_material": KEY}).to_string()),
        409,
        "InvalidKeyPair.Duplicate",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/key-pairs",
        Some(r#"{"key_name": "x", "public_key_material": "ssh-rsa AAAA"}"#),
        400,
        "InvalidKey.Format",
    );
    assert_error(
        &agent,
        "GET",
        "/v1/key-pairs/none",
        None,
        404,
        "InvalidKeyPair.NotFound",
    );

    // Subnets, with their bridges on the host.
    let subnet = agent.ok(
        "POST",
        "/v1/subnets",
        Some(json!({"cidr_block": "10.213.0.0/24"})),
        201,
    );
    let subnet_id = subnet["subnet_id"].as_str().unwrap().to_string();
    let bridge = subnet["bridge"].as_str().unwrap().to_string();
    agent.bridges.push(bridge.clone());
    assert_eq!(subnet["gateway"], "10.213.0.1");
    assert_eq!(subnet["available_ip_address_count"], 251);
    assert!(bridge_exists(&bridge), "no bridge {bridge} on the host");
    assert_error(
        &agent,
        "POST",
        "/v1/subnets",
        Some(r#"{"cidr_block": "10.213.0.128/25"}"#),
        409,
        "InvalidSubnet.Conflict",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/subnets",
        Some(r#"{"cidr_block": "10.213.0.1/24"}"#),
        400,
        "InvalidParameterValue",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/subnets",
        Some(r#"{"cidr_block": "10.0.0.0/8"}"#),
        400,
        "InvalidParameterValue",
    );

    // Security groups: a reference between two, rules, quotas.
    let web = agent.ok(
        "POST",
        "/v1/security-groups",
        Some(json!({"group_name": "web", "description": "web tier"})),
        201,
    );
    let web_id = web["group_id"].as_str().unwrap().to_string();
    assert_eq!(web["ip_permissions"], json!([]));
    assert_eq!(web["ip_permissions_egress"][0]["ip_protocol"], "-1");
    let admin = agent.ok(
        "POST",
        "/v1/security-groups",
        Some(json!({"group_name": "admin", "description": "admins"})),
        201,
    );
    let admin_id = admin["group_id"].as_str().unwrap().to_string();
    let perms = json!({"ip_permissions": [
        {"ip_protocol": "tcp", "from_port": 443, "to_port": 443, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]},
        {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "user_id_group_pairs": [{"group_id": admin_id}]}]});
    let after = agent.ok(
        "POST",
        &format!("/v1/security-groups/{web_id}/authorize-ingress"),
        Some(perms.clone()),
        200,
    );
    assert_eq!(
        after["ip_permissions"].as_array().unwrap().len(),
        2,
        "{after}"
    );
    let path = format!("/v1/security-groups/{web_id}/authorize-ingress");
    assert_error(
        &agent,
        "POST",
        &path,
        Some(&perms.to_string()),
        409,
        "InvalidPermission.Duplicate",
    );
    assert_error(
        &agent,
        "POST",
        &path,
        Some(
            r#"{"ip_permissions": [{"ip_protocol": "tcp", "from_port": 9, "to_port": 1, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}]}"#,
        ),
        400,
        "InvalidParameterValue",
    );
    assert_error(
        &agent,
        "POST",
        &path,
        Some(
            r#"{"ip_permissions": [{"ip_protocol": "tcp", "from_port": 1, "to_port": 1, "user_id_group_pairs": [{"group_id": "sg-00000000"}]}]}"#,
        ),
        404,
        "InvalidGroup.NotFound",
    );
    let many: Vec<Value> = (0..61)
        .map(|i| json!({"cidr_ip": format!("10.9.{i}.0/24")}))
        .collect();
    assert_error(&agent, "POST", &path, Some(&json!({"ip_permissions": [{"ip_protocol": "udp", "from_port": 53, "to_port": 53, "ip_ranges": many}]}).to_string()), 400, "RulesPerSecurityGroupLimitExceeded");
    assert_error(
        &agent,
        "POST",
        "/v1/security-groups",
        Some(r#"{"group_name": "web", "description": "again"}"#),
        409,
        "InvalidGroup.Duplicate",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/security-groups",
        Some(r#"{"group_name": "sg-x", "description": "d"}"#),
        400,
        "InvalidParameterValue",
    );
    assert_error(
        &agent,
        "DELETE",
        &format!("/v1/security-groups/{admin_id}"),
        None,
        409,
        "DependencyViolation",
    );
    // The failed requests changed nothing.
    let web_now = agent.ok("GET", &format!("/v1/security-groups/{web_id}"), None, 200);
    assert_eq!(web_now["ip_permissions"], after["ip_permissions"]);

    // kill -9 and a new agent on the same state: everything is there.
    agent.crash_and_restart();
    assert_eq!(
        agent.ok("GET", &format!("/v1/images/{image_id}"), None, 200)["name"],
        "debian-12"
    );
    assert_eq!(
        agent.ok("GET", "/v1/key-pairs/ops", None, 200)["public_key"],
        KEY
    );
    assert_eq!(
        agent.ok("GET", &format!("/v1/subnets/{subnet_id}"), None, 200)["state"],
        "available"
    );
    assert!(bridge_exists(&bridge));
    let web_after = agent.ok("GET", &format!("/v1/security-groups/{web_id}"), None, 200);
    assert_eq!(web_after["ip_permissions"], after["ip_permissions"]);

    // Revoke, then deletions; the bridge goes with its subnet.
    agent.ok(
        "POST",
        &format!("/v1/security-groups/{web_id}/revoke-ingress"),
        Some(perms.clone()),
        200,
    );
    assert_error(
        &agent,
        "POST",
        &format!("/v1/security-groups/{web_id}/revoke-ingress"),
        Some(&perms.to_string()),
        400,
        "InvalidPermission.NotFound",
    );
    agent.ok(
        "DELETE",
        &format!("/v1/security-groups/{admin_id}"),
        None,
        204,
    );
    agent.ok(
        "DELETE",
        &format!("/v1/security-groups/{web_id}"),
        None,
        204,
    );
    agent.ok("DELETE", &format!("/v1/subnets/{subnet_id}"), None, 204);
    assert!(
        !bridge_exists(&bridge),
        "bridge {bridge} outlived its subnet"
    );
    agent.ok("DELETE", "/v1/key-pairs/ops", None, 204);
    agent.ok("DELETE", &format!("/v1/images/{image_id}"), None, 204);
    assert_error(
        &agent,
        "DELETE",
        &format!("/v1/images/{image_id}"),
        None,
        404,
        "InvalidAMIID.NotFound",
    );

    // Metrics count by route template (since the restart).
    let (status, _) = agent.raw("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.contains("stratus_agent_api_requests_total{route=\"/v1/security-groups/{group_id}/revoke-ingress\",code=\"400\"} 1"), "{text}");
    assert!(
        text.contains("stratus_agent_store_commit_duration_seconds_count"),
        "{text}"
    );
}

#[test]
fn fifty_concurrent_calls_all_succeed_or_fail_cleanly() {
    if !privileged() {
        return;
    }
    let agent = Agent::start("concurrent");
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let agent = &agent;
                s.spawn(move || {
                    // Half create distinct groups, half the same name: one
                    // of those wins, the rest get 409.
                    let name = if i % 2 == 0 {
                        format!("g{i}")
                    } else {
                        "same".into()
                    };
                    agent
                        .call(
                            "POST",
                            "/v1/security-groups",
                            Some(&json!({"group_name": name, "description": "d"})),
                        )
                        .0
                })
            })
            .collect();
        let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(codes.iter().filter(|&&c| c == 201).count(), 26, "{codes:?}");
        assert_eq!(codes.iter().filter(|&&c| c == 409).count(), 24, "{codes:?}");
    });
    let list = agent.ok("GET", "/v1/security-groups", None, 200);
    assert_eq!(list["security_groups"].as_array().unwrap().len(), 26);
    eprintln!("50 concurrent creates in {:?}", start.elapsed());
}

#[test]
fn instance_requests_are_checked_before_anything_runs() {
    if !privileged() {
        return;
    }
    let agent = Agent::start("instances");
    let manifest = bundle(&agent.dir);
    let image = agent.ok(
        "POST",
        "/v1/images",
        Some(json!({"manifest_path": manifest})),
        201,
    );
    let image_id = image["image_id"].as_str().unwrap().to_string();
    let subnet = agent.ok(
        "POST",
        "/v1/subnets",
        Some(json!({"cidr_block": "10.214.0.0/28"})),
        201,
    );
    let mut agent = agent;
    agent
        .bridges
        .push(subnet["bridge"].as_str().unwrap().to_string());
    let subnet_id = subnet["subnet_id"].as_str().unwrap().to_string();
    let group = agent.ok(
        "POST",
        "/v1/security-groups",
        Some(json!({"group_name": "g", "description": "d"})),
        201,
    );
    let group_id = group["group_id"].as_str().unwrap().to_string();
    let base = json!({"image_id": image_id, "instance_type": "t3.nano", "subnet_id": subnet_id, "security_group_ids": [group_id]});
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b.to_string()
    };
    let cases = [
        (
            with("image_id", json!("ami-00000000000000000")),
            404,
            "InvalidAMIID.NotFound",
        ),
        (
            with("subnet_id", json!("subnet-00000000000000000")),
            404,
            "InvalidSubnetID.NotFound",
        ),
        (
            with("security_group_ids", json!(["sg-00000000000000000"])),
            404,
            "InvalidGroup.NotFound",
        ),
        (
            with("security_group_ids", json!([])),
            400,
            "InvalidParameterValue",
        ),
        (
            with("instance_type", json!("z9.huge")),
            400,
            "InvalidParameterValue",
        ),
        (with("count", json!(0)), 400, "InvalidParameterValue"),
        (
            with("key_name", json!("nobody")),
            404,
            "InvalidKeyPair.NotFound",
        ),
        (
            with("user_data", json!("%%%")),
            400,
            "InvalidParameterValue",
        ),
        (
            with("private_ip_address", json!("10.214.0.1")),
            400,
            "InvalidParameterValue",
        ),
        (
            with("private_ip_address", json!("10.99.0.9")),
            400,
            "InvalidParameterValue",
        ),
        (
            with(
                "metadata_options",
                json!({"http_put_response_hop_limit": 65}),
            ),
            400,
            "InvalidParameterValue",
        ),
        (
            with("metadata_options", json!({"http_tokens": "sometimes"})),
            400,
            "InvalidParameterValue",
        ),
        // A /28 has 11 addresses for instances.
        (
            with("count", json!(12)),
            409,
            "InsufficientFreeAddressesInSubnet",
        ),
        (with("bogus", json!(1)), 400, "InvalidRequest"),
        // More memory than this host has (the check needs no launch).
        (
            with("count", json!(20)).replace("t3.nano", "m5.2xlarge"),
            409,
            "InsufficientInstanceCapacity",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(&agent, "POST", "/v1/instances", Some(&body), status, code);
    }
    // Nothing was made.
    let list = agent.ok("GET", "/v1/instances", None, 200);
    assert_eq!(list["instances"], json!([]), "{list}");
    assert_error(
        &agent,
        "GET",
        "/v1/instances/i-00000000000000000",
        None,
        404,
        "InvalidInstanceID.NotFound",
    );
    assert_error(
        &agent,
        "POST",
        "/v1/instances/nope/stop",
        None,
        400,
        "InvalidInstanceID.Malformed",
    );
    assert_error(
        &agent,
        "GET",
        "/v1/instances?state=sleeping",
        None,
        400,
        "InvalidParameterValue",
    );
    agent.ok("DELETE", &format!("/v1/subnets/{subnet_id}"), None, 204);
}

#[test]
fn tells_systemd_when_it_is_ready_and_feeds_the_watchdog() {
    if !privileged() {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("stratus-agent-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut agent = Agent {
        child: None,
        dir: dir.join("state"),
        addr: String::new(),
        token: String::new(),
        bridges: Vec::new(),
    };
    std::fs::create_dir_all(&agent.dir).unwrap();
    agent.spawn_with_env(&[
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "200000"),
    ]);
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        let n = socket.recv(&mut buf).expect("a notification within 20 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(got[0].contains("READY=1"), "{got:?}");
    // By the time READY=1 came, the API answers.
    assert_eq!(agent.raw("GET", "/v1/health", None, None).0, 200);
    // SIGTERM: STOPPING=1, exit 0.
    let child = agent.child.take().unwrap();
    // SAFETY: kill with a pid we own and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut child = child;
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
