//! The agent as a user runs it: the real binary on a loopback port with a
//! state directory of its own, driven over HTTP. Every route is called
//! with good and bad input; bad input gets a 4xx with a JSON error and
//! changes nothing; state survives a `kill -9` and restart; subnets make
//! and remove real bridges on the host (so these tests need root and
//! iproute2, as the agent does; without root they say so and skip, and
//! under CI they fail).
//!
//! The HTTP client is a few lines over `TcpStream` (HTTP/1.1, one request
//! per connection; in `common`, shared with `cli.rs`): the tests need no
//! client library, and the agent's server is the real one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{bundle, privileged, Agent, KEY};

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
        // The VMM would refuse a document naming a group twice.
        (
            with("security_group_ids", json!([group_id, group_id])),
            400,
            "InvalidParameterValue",
        ),
        (
            with("security_group_ids", json!(["web"])),
            400,
            "InvalidGroupId.Malformed",
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
        args: Vec::new(),
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

/// Whether openssl can be run; without it the signature checks skip,
/// except under CI.
fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required when CI is set"
        );
        eprintln!("skipping the signature checks: openssl not found");
    }
    ok
}

/// Runs openssl in `dir`, insisting that it succeeds; its stdout.
fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks, as a guest would, that the identity document of the metadata
/// file `metadata` (the agent's `metadata.json` for a VMM) is signed by
/// the key of `cert_pem`: `signature` with `openssl dgst`, `rsa2048` and
/// `pkcs7` with `openssl smime` (which prints the document back).
fn verify_identity(dir: &std::path::Path, metadata: &Value, cert_pem: &str) {
    use base64::Engine as _;
    let doc = &metadata["document"];
    // The document as the metadata service serves it (the VMM builds it
    // from these fields the same way).
    let parsed: stratus_devices::net::metadata::MetadataDocument =
        serde_json::from_value(doc.clone()).unwrap();
    let text = parsed.identity_document();
    let d = dir.join("verify");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(d.join("document"), &text).unwrap();
    let signature = doc["identity"]["signature"]
        .as_str()
        .unwrap_or_else(|| panic!("no signature in {doc}"))
        .replace('\n', "");
    std::fs::write(
        d.join("signature"),
        base64::engine::general_purpose::STANDARD
            .decode(signature)
            .unwrap(),
    )
    .unwrap();
    let public = openssl(&d, &["x509", "-pubkey", "-noout", "-in", "cert.pem"]);
    std::fs::write(d.join("public.pem"), public).unwrap();
    openssl(
        &d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "public.pem",
            "-signature",
            "signature",
            "document",
        ],
    );
    for name in ["rsa2048", "pkcs7"] {
        let body = doc["identity"][name].as_str().unwrap();
        std::fs::write(
            d.join(name),
            format!("-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----\n"),
        )
        .unwrap();
        let shown = openssl(
            &d,
            &[
                "smime",
                "-verify",
                "-in",
                name,
                "-inform",
                "PEM",
                "-certfile",
                "cert.pem",
                "-CAfile",
                "cert.pem",
            ],
        );
        assert_eq!(shown, text, "{name}");
    }
}

fn group_ids(inst: &Value) -> Vec<String> {
    inst["security_group_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect()
}

/// An instance's groups change while it is stopped (its VMM here is
/// `/bin/true`, which "boots" and powers off at once: no KVM needed) and
/// its next VMM gets them, in a metadata file whose identity document is
/// signed by the host certificate the API serves; bad changes are refused
/// and change nothing; the certificate and the change survive a `kill -9`
/// and restart; a terminated instance's groups are final.
#[test]
fn an_instances_groups_change_and_its_metadata_is_signed_by_the_host() {
    if !privileged() {
        return;
    }
    let mut agent = Agent::start_with_args("instance-groups", &["--vmm", "/bin/true"]);
    let openssl_here = have_openssl();

    // The host certificate: open, PEM, made on this first start.
    let (status, head, cert) = agent.get_open("/v1/identity-certificate");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-pem-file"),
        "{head}"
    );
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert_eq!(
        std::fs::read_to_string(agent.dir.join("identity-cert.pem")).unwrap(),
        cert
    );
    let key = std::fs::read(agent.dir.join("identity-key.pem")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(agent.dir.join("identity-key.pem")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    let manifest = bundle(&agent.dir);
    let image = agent.ok(
        "POST",
        "/v1/images",
        Some(json!({"manifest_path": manifest})),
        201,
    );
    let subnet = agent.ok(
        "POST",
        "/v1/subnets",
        Some(json!({"cidr_block": "10.215.0.0/28"})),
        201,
    );
    agent
        .bridges
        .push(subnet["bridge"].as_str().unwrap().to_string());
    let subnet_id = subnet["subnet_id"].as_str().unwrap().to_string();
    let groups: Vec<String> = (1..=6)
        .map(|i| {
            agent.ok(
                "POST",
                "/v1/security-groups",
                Some(json!({"group_name": format!("g{i}"), "description": "d"})),
                201,
            )["group_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let run = agent.ok(
        "POST",
        "/v1/instances",
        Some(
            json!({"image_id": image["image_id"], "instance_type": "t3.nano",
            "subnet_id": subnet_id, "security_group_ids": [groups[0]]}),
        ),
        201,
    );
    let inst = &run["instances"][0];
    let id = inst["instance_id"].as_str().unwrap().to_string();
    agent
        .bridges
        .push(inst["tap"].as_str().unwrap().to_string());
    let stopped = agent.wait_for_state(&id, "stopped");
    assert_eq!(group_ids(&stopped), [groups[0].clone()]);

    // The metadata file the agent wrote for the VMM: signed by the host.
    let metadata_path = agent.dir.join("instances").join(&id).join("metadata.json");
    let read_metadata = || {
        serde_json::from_str::<Value>(&std::fs::read_to_string(&metadata_path).unwrap()).unwrap()
    };
    let metadata = read_metadata();
    assert_eq!(metadata["document"]["security_groups"], json!(["g1"]));
    if openssl_here {
        verify_identity(&agent.dir, &metadata, &cert);
    }

    // The change, on a stopped instance.
    let path = format!("/v1/instances/{id}/security-groups");
    let new_groups = json!([groups[1], groups[2]]);
    let changed = agent.ok(
        "PUT",
        &path,
        Some(json!({"security_group_ids": new_groups})),
        200,
    );
    assert_eq!(changed["security_group_ids"], new_groups, "{changed}");
    assert!(changed["generation"].as_u64() > stopped["generation"].as_u64());
    let described = agent.ok("GET", &format!("/v1/instances/{id}"), None, 200);
    assert_eq!(described, changed);
    let listed = agent.ok("GET", "/v1/instances", None, 200);
    assert_eq!(listed["instances"][0]["security_group_ids"], new_groups);
    // The same groups again: nothing to do, nothing bumped.
    let again = agent.ok(
        "PUT",
        &path,
        Some(json!({"security_group_ids": new_groups})),
        200,
    );
    assert_eq!(again, changed);

    // Refused, and nothing changes.
    let six = json!({ "security_group_ids": groups });
    let body = |ids: Value| json!({ "security_group_ids": ids }).to_string();
    let cases = [
        (
            path.clone(),
            body(json!([groups[1], "sg-00000000000000000"])),
            404,
            "InvalidGroup.NotFound",
        ),
        (
            path.clone(),
            body(json!([groups[1], groups[1]])),
            400,
            "InvalidParameterValue",
        ),
        (path.clone(), body(json!([])), 400, "InvalidParameterValue"),
        (path.clone(), six.to_string(), 400, "InvalidParameterValue"),
        (
            path.clone(),
            body(json!(["g2"])),
            400,
            "InvalidGroupId.Malformed",
        ),
        (
            path.clone(),
            r#"{"groups": []}"#.to_string(),
            400,
            "InvalidRequest",
        ),
        (
            "/v1/instances/i-00000000000000000/security-groups".to_string(),
            body(json!([groups[1]])),
            404,
            "InvalidInstanceID.NotFound",
        ),
        (
            "/v1/instances/nope/security-groups".to_string(),
            body(json!([groups[1]])),
            400,
            "InvalidInstanceID.Malformed",
        ),
    ];
    for (route, body, status, code) in &cases {
        assert_error(&agent, "PUT", route, Some(body), *status, code);
    }
    assert_eq!(
        agent.ok("GET", &format!("/v1/instances/{id}"), None, 200),
        changed
    );
    // The groups are the instance's now: the one it left may go, the ones
    // it joined may not.
    agent.ok(
        "DELETE",
        &format!("/v1/security-groups/{}", groups[0]),
        None,
        204,
    );
    assert_error(
        &agent,
        "DELETE",
        &format!("/v1/security-groups/{}", groups[1]),
        None,
        409,
        "DependencyViolation",
    );

    // Its next VMM gets the new groups, signed metadata and all.
    let started = agent.ok("POST", &format!("/v1/instances/{id}/start"), None, 200);
    assert_eq!(started["state"], "pending", "{started}");
    // The VMM starts in the background; this one exits at once.
    let stopped = agent.wait_for(&id, "stopped after a start", |inst| {
        inst["state"] == "stopped" && inst["generation"].as_u64() > started["generation"].as_u64()
    });
    let metadata = read_metadata();
    assert_eq!(metadata["document"]["security_groups"], json!(["g2", "g3"]));
    assert_eq!(
        metadata["document"]["interfaces"][0]["security_group_ids"],
        new_groups
    );
    if openssl_here {
        verify_identity(&agent.dir, &metadata, &cert);
    }
    let sg: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.join("instances").join(&id).join("sg.json")).unwrap(),
    )
    .unwrap();
    let sg_ids: Vec<&str> = sg["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(sg_ids, [groups[1].as_str(), groups[2].as_str()]);

    // kill -9 and restart: the same identity, the change kept.
    agent.crash_and_restart();
    let (_, _, cert_after) = agent.get_open("/v1/identity-certificate");
    assert_eq!(cert_after, cert);
    assert_eq!(
        std::fs::read(agent.dir.join("identity-key.pem")).unwrap(),
        key
    );
    assert_eq!(
        agent.ok("GET", &format!("/v1/instances/{id}"), None, 200)["security_group_ids"],
        stopped["security_group_ids"]
    );

    // Terminated: refused, unchanged.
    agent.ok("POST", &format!("/v1/instances/{id}/terminate"), None, 200);
    let terminated = agent.wait_for_state(&id, "terminated");
    assert_error(
        &agent,
        "PUT",
        &path,
        Some(&body(json!([groups[3]]))),
        409,
        "IncorrectInstanceState",
    );
    assert_eq!(
        agent.ok("GET", &format!("/v1/instances/{id}"), None, 200),
        terminated
    );
    agent.ok("DELETE", &format!("/v1/subnets/{subnet_id}"), None, 204);
}

/// A launch whose VMM cannot start ends `terminated`; its groups can no
/// longer change.
#[test]
fn a_terminated_launchs_groups_cannot_change() {
    if !privileged() {
        return;
    }
    let mut agent = Agent::start_with_args("failed-launch", &["--vmm", "/nonexistent"]);
    let fx = agent.launch_fixture("10.216.0.0/28");
    let other = agent.ok(
        "POST",
        "/v1/security-groups",
        Some(json!({"group_name": "h", "description": "d"})),
        201,
    )["group_id"]
        .clone();
    let run = agent.ok(
        "POST",
        "/v1/instances",
        Some(json!({"image_id": fx.image_id, "instance_type": "t3.nano",
            "subnet_id": fx.subnet_id, "security_group_ids": [fx.group_id]})),
        201,
    );
    // Accepted, then the launcher finds it cannot start the VMM.
    assert_eq!(run["instances"][0]["state"], "pending", "{run}");
    let id = run["instances"][0]["instance_id"].as_str().unwrap();
    let inst = agent.wait_for_state(id, "terminated");
    assert!(
        inst["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Server.InternalError") && r.contains("/nonexistent")),
        "{inst}"
    );
    assert!(inst["private_ip"].is_null(), "{inst}");
    assert_error(
        &agent,
        "PUT",
        &format!("/v1/instances/{id}/security-groups"),
        Some(&json!({ "security_group_ids": [other] }).to_string()),
        409,
        "IncorrectInstanceState",
    );
    assert_eq!(
        agent.ok("GET", &format!("/v1/instances/{id}"), None, 200),
        inst
    );
}

/// An identity key that is not a key stops the agent at startup with
/// exit code 2, as a bad setting does, and is left as it is.
#[test]
fn an_unusable_identity_key_stops_the_agent_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("stratus-agent-badkey-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("identity-key.pem"), "not a key").unwrap();
    std::fs::write(dir.join("identity-cert.pem"), "not a certificate").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stratus-agent"))
        .arg("--state-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("identity-key.pem"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("identity-key.pem")).unwrap(),
        "not a key"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stand-in for VMMs' control APIs: the agent's VMM is `sleep` (it
/// never binds its socket), and the test binds each instance's
/// `api.sock` itself, answers the agent's boot probe (so the instance
/// becomes `running`) and records every request. Its `sleep`s are killed
/// on drop, pass or fail.
struct FakeVmms {
    script: PathBuf,
    pids: Vec<i32>,
    /// Every request but the boot probes, in order.
    requests: std::sync::Arc<std::sync::Mutex<Vec<VmmRequest>>>,
}

/// A request a fake VMM got: (instance id, method, path, body).
type VmmRequest = (String, String, String, String);

impl FakeVmms {
    fn new() -> FakeVmms {
        use std::os::unix::fs::PermissionsExt as _;
        // One script per user: tests run side by side, and each removes
        // its own when it ends.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let script =
            std::env::temp_dir().join(format!("stratus-fake-vmm-{}-{n}.sh", std::process::id()));
        // A loop, not `exec sleep`: the shell keeps the VMM's arguments
        // on its command line, where the agent looks for strays.
        std::fs::write(&script, "#!/bin/sh\nwhile :; do sleep 1; done\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeVmms {
            script,
            pids: Vec::new(),
            requests: Default::default(),
        }
    }

    /// Serves instance `inst`'s API socket under `dir` from now on
    /// (`inst` as described once its VMM runs).
    fn serve(&mut self, dir: &std::path::Path, inst: &Value) {
        use std::os::unix::net::UnixListener;
        let id = inst["instance_id"].as_str().unwrap().to_string();
        self.pids
            .push(i32::try_from(inst["process"]["pid"].as_i64().unwrap()).unwrap());
        let socket = dir.join("instances").join(&id).join("api.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = std::sync::Arc::clone(&self.requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut reader = BufReader::new(conn);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut words = head.split_whitespace();
                let (method, path) = (
                    words.next().unwrap_or_default().to_string(),
                    words.next().unwrap_or_default().to_string(),
                );
                let answer = if method == "GET" {
                    let body = r#"{"boot_time_seconds": 0.5}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = reader.get_mut().write_all(answer.as_bytes());
                if method != "GET" {
                    requests.lock().unwrap().push((
                        id.clone(),
                        method,
                        path,
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                }
            }
        });
    }

    /// The bodies of the `PUT path` requests instance `id`'s VMM got.
    fn puts(&self, id: &str, path: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, m, p, _)| i == id && m == "PUT" && p == path)
            .map(|(_, _, _, body)| serde_json::from_str(body).unwrap())
            .collect()
    }

    /// Ends the VMMs (the agent sees them die and stops their instances).
    fn kill_all(&mut self) {
        for pid in self.pids.drain(..) {
            // SAFETY: kill with a pid of a process this test had started
            // and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for FakeVmms {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Groups changed while instances run reach their VMMs at once: the
/// instance's own VMM gets its new security-group document and its
/// metadata (new groups, the identity document signed by the host), and
/// the VMM of an instance whose rule names a group the instance joined
/// gets the instance's address in that group's set; an instance the
/// change does not touch gets nothing.
#[test]
fn groups_changed_while_running_reach_every_vmm_they_touch() {
    if !privileged() {
        return;
    }
    let mut vmms = FakeVmms::new();
    let script = vmms.script.to_str().unwrap().to_string();
    let mut agent = Agent::start_with_args("live-groups", &["--vmm", &script]);
    let manifest = bundle(&agent.dir);
    let image = agent.ok(
        "POST",
        "/v1/images",
        Some(json!({"manifest_path": manifest})),
        201,
    );
    let subnet = agent.ok(
        "POST",
        "/v1/subnets",
        Some(json!({"cidr_block": "10.217.0.0/28"})),
        201,
    );
    agent
        .bridges
        .push(subnet["bridge"].as_str().unwrap().to_string());
    let subnet_id = subnet["subnet_id"].as_str().unwrap().to_string();
    let group = |name: &str| {
        agent.ok(
            "POST",
            "/v1/security-groups",
            Some(json!({"group_name": name, "description": "d"})),
            201,
        )["group_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // web lets admin in on 22; db and admin name no group.
    let (web, db, admin) = (group("web"), group("db"), group("admin"));
    agent.ok(
        "POST",
        &format!("/v1/security-groups/{web}/authorize-ingress"),
        Some(
            json!({"ip_permissions": [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22,
            "user_id_group_pairs": [{"group_id": admin}]}]}),
        ),
        200,
    );
    // a in db, b in web, c in db.
    let mut launch = |groups: &[&str]| {
        let run = agent.ok(
            "POST",
            "/v1/instances",
            Some(
                json!({"image_id": image["image_id"], "instance_type": "t3.nano",
                "subnet_id": subnet_id, "security_group_ids": groups}),
            ),
            201,
        );
        let inst = run["instances"][0].clone();
        assert_eq!(inst["state"], "pending", "{inst}");
        agent
            .bridges
            .push(inst["tap"].as_str().unwrap().to_string());
        let id = inst["instance_id"].as_str().unwrap().to_string();
        vmms.serve(&agent.dir, &agent.wait_for_vmm(&id));
        id
    };
    let a = launch(&[&db]);
    let b = launch(&[&web]);
    let c = launch(&[&db]);
    for id in [&a, &b, &c] {
        agent.wait_for_state(id, "running");
    }
    let a_ip = agent.ok("GET", &format!("/v1/instances/{a}"), None, 200)["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let sg_path = "/network-interfaces/net0/security-groups";
    assert!(vmms.puts(&b, sg_path).is_empty());

    // a joins admin, which web's rule names.
    agent.ok(
        "PUT",
        &format!("/v1/instances/{a}/security-groups"),
        Some(json!({"security_group_ids": [db, admin]})),
        200,
    );
    // b's VMM learns a's address (the pushes are done by the answer).
    let to_b = vmms.puts(&b, sg_path);
    assert_eq!(to_b.len(), 1, "{to_b:?}");
    assert_eq!(
        to_b[0]["address_sets"][&admin],
        json!([a_ip]),
        "{}",
        to_b[0]
    );
    // a's VMM gets its own groups and its metadata.
    let to_a = vmms.puts(&a, sg_path);
    assert_eq!(to_a.len(), 1, "{to_a:?}");
    let ids: Vec<&str> = to_a[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [db.as_str(), admin.as_str()]);
    let metadata = vmms.puts(&a, "/metadata");
    assert_eq!(metadata.len(), 1, "{metadata:?}");
    assert_eq!(
        metadata[0]["document"]["security_groups"],
        json!(["db", "admin"])
    );
    assert_eq!(
        metadata[0]["document"]["interfaces"][0]["security_group_ids"],
        json!([db, admin])
    );
    if have_openssl() {
        let (_, _, cert) = agent.get_open("/v1/identity-certificate");
        verify_identity(&agent.dir, &metadata[0], &cert);
    }
    // c is untouched: db is named by no rule.
    assert!(vmms.puts(&c, sg_path).is_empty());
    assert!(vmms.puts(&c, "/metadata").is_empty());
    let (_, _, metrics) = agent.get_open("/metrics");
    assert!(
        metrics.contains("stratus_agent_rule_pushes_total 2"),
        "{metrics}"
    );

    // The VMMs die: stopped, then released.
    vmms.kill_all();
    for id in [&a, &b, &c] {
        agent.wait_for_state(id, "stopped");
        agent.ok("POST", &format!("/v1/instances/{id}/terminate"), None, 200);
        agent.wait_for_state(id, "terminated");
    }
    agent.ok("DELETE", &format!("/v1/subnets/{subnet_id}"), None, 204);
}

/// Boots are admitted `--max-booting` at a time, the rest wait `pending`
/// without a VMM; a launch accepted before the agent was killed is
/// carried out after its restart (not rolled back), and a VMM the agent
/// had started for it without recording it is killed first.
#[test]
fn launches_wait_for_a_boot_slot_and_survive_an_agent_kill() {
    if !privileged() {
        return;
    }
    let mut vmms = FakeVmms::new();
    let script = vmms.script.to_str().unwrap().to_string();
    let mut agent = Agent::start_with_args("boot-slots", &["--vmm", &script, "--max-booting", "1"]);
    let fx = agent.launch_fixture("10.218.0.0/28");
    let run = agent.ok(
        "POST",
        "/v1/instances",
        Some(json!({"image_id": fx.image_id, "instance_type": "t3.nano",
            "subnet_id": fx.subnet_id, "security_group_ids": [fx.group_id], "count": 3})),
        201,
    );
    let mut queued: Vec<String> = Vec::new();
    for inst in run["instances"].as_array().unwrap() {
        assert_eq!(inst["state"], "pending", "{inst}");
        assert!(inst["process"].is_null(), "{inst}");
        agent
            .bridges
            .push(inst["tap"].as_str().unwrap().to_string());
        queued.push(inst["instance_id"].as_str().unwrap().to_string());
    }
    // The one instance of `queued` that has a VMM, once one has; the
    // others must have none.
    let next_booting = |agent: &Agent, queued: &mut Vec<String>| -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let with_vmm: Vec<Value> = queued
                .iter()
                .map(|id| agent.ok("GET", &format!("/v1/instances/{id}"), None, 200))
                .filter(|inst| inst["process"]["pid"].is_i64())
                .collect();
            assert!(with_vmm.len() <= 1, "two boots at once: {with_vmm:?}");
            if let Some(inst) = with_vmm.into_iter().next() {
                assert_eq!(inst["state"], "pending", "{inst}");
                queued.retain(|id| inst["instance_id"] != id.as_str());
                return inst;
            }
            assert!(Instant::now() < deadline, "no VMM started for {queued:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The first boots; the other two wait while it does.
    let first = next_booting(&agent, &mut queued);
    std::thread::sleep(Duration::from_secs(2));
    for id in &queued {
        let inst = agent.ok("GET", &format!("/v1/instances/{id}"), None, 200);
        assert!(inst["process"].is_null(), "started beside a boot: {inst}");
    }
    // Its guest boots (the fake answers the boot probe): the next starts.
    vmms.serve(&agent.dir, &first);
    let first_id = first["instance_id"].as_str().unwrap().to_string();
    agent.wait_for_state(&first_id, "running");
    let second = next_booting(&agent, &mut queued);
    let third_id = queued[0].clone();

    // A VMM for the third that a crashed agent had started but not
    // recorded; then the agent is killed with the second booting and the
    // third queued.
    let mut stray = Command::new(&script)
        .args(["--id", &third_id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    agent.crash_and_restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stray.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the stray VMM was left running");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The second is adopted and still holds the slot; once it boots, the
    // third is launched: all three run, under the ids they were given.
    let second_id = second["instance_id"].as_str().unwrap().to_string();
    let adopted = agent.ok("GET", &format!("/v1/instances/{second_id}"), None, 200);
    assert_eq!(adopted["process"], second["process"], "{adopted}");
    std::thread::sleep(Duration::from_secs(1));
    let third = agent.ok("GET", &format!("/v1/instances/{third_id}"), None, 200);
    assert!(third["process"].is_null(), "started beside a boot: {third}");
    vmms.serve(&agent.dir, &second);
    agent.wait_for_state(&second_id, "running");
    let third = next_booting(&agent, &mut queued);
    vmms.serve(&agent.dir, &third);
    agent.wait_for_state(&third_id, "running");
    assert_eq!(
        agent.ok("GET", &format!("/v1/instances/{first_id}"), None, 200)["state"],
        "running"
    );
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A guest that reboots again right after each restart (its VMM exits
/// with the reboot status at once) is not restarted in a tight loop:
/// each restart waits twice as long as the one before, the instance says
/// why, a `kill -9` of the agent does not cut the wait short, and a stop
/// during a wait ends it.
#[test]
fn a_reboot_loop_backs_off_and_stops_when_asked() {
    use std::os::unix::fs::PermissionsExt as _;
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stratus-reboot-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runs = dir.join("runs");
    let script = dir.join("vmm.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho run >> {}\nexit 3\n", runs.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let count = || {
        std::fs::read_to_string(&runs)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let mut agent = Agent::start_with_args("reboot-loop", &["--vmm", script.to_str().unwrap()]);
    let fx = agent.launch_fixture("10.219.0.0/28");
    let run = agent.ok(
        "POST",
        "/v1/instances",
        Some(json!({"image_id": fx.image_id, "instance_type": "t3.nano",
            "subnet_id": fx.subnet_id, "security_group_ids": [fx.group_id]})),
        201,
    );
    let inst = &run["instances"][0];
    agent
        .bridges
        .push(inst["tap"].as_str().unwrap().to_string());
    let id = inst["instance_id"].as_str().unwrap().to_string();
    // Starts at 0, then 0 s, 1 s, 2 s, 4 s after each: 4 by 6 s, where
    // an immediate restart would have made hundreds.
    std::thread::sleep(Duration::from_secs(6));
    let seen = count();
    assert!((3..=6).contains(&seen), "{seen} VMM starts in 6 s");
    let looping = agent.ok("GET", &format!("/v1/instances/{id}"), None, 200);
    assert!(
        looping["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Client.InstanceRebootLoop")),
        "{looping}"
    );
    // The agent killed during a wait: the new agent keeps the wait (no
    // VMM before the recorded restart time), then restarts it.
    let in_a_long_wait = agent.wait_for(&id, "a wait of 5 s or more", |i| {
        i["restart_at"]
            .as_u64()
            .is_some_and(|t| t >= unix_now() + 5)
    });
    let restart_at = in_a_long_wait["restart_at"].as_u64().unwrap();
    let before_kill = count();
    agent.crash_and_restart();
    while unix_now() + 1 < restart_at {
        assert_eq!(
            count(),
            before_kill,
            "a VMM started before its wait was over"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() == before_kill {
        assert!(
            Instant::now() < deadline,
            "no VMM within 4 s after the wait"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stopped during a wait: it stays stopped, nothing starts again.
    agent.wait_for(&id, "a reboot-loop wait", |i| i["restart_at"].is_u64());
    agent.ok("POST", &format!("/v1/instances/{id}/stop"), None, 200);
    let stopped = agent.wait_for_state(&id, "stopped");
    assert!(stopped["process"].is_null(), "{stopped}");
    let after_stop = count();
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(count(), after_stop, "a VMM started after the stop");
    assert_eq!(
        agent.ok("GET", &format!("/v1/instances/{id}"), None, 200)["state"],
        "stopped"
    );
    // A start begins afresh: its VMM starts at once, not after the
    // loop's last wait.
    agent.ok("POST", &format!("/v1/instances/{id}/start"), None, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while count() == after_stop {
        assert!(Instant::now() < deadline, "no VMM within 2 s of a start");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.ok("POST", &format!("/v1/instances/{id}/terminate"), None, 200);
    agent.wait_for_state(&id, "terminated");
    let _ = std::fs::remove_dir_all(&dir);
}
