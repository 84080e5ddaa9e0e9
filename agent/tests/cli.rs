//! The `stratus` client as a user runs it: the real binary against a real
//! agent (started as `api.rs` starts it, from `common`). Every group of
//! commands is run, its `--output json` held equal to what the API
//! answers the same call, its tables checked for a header and a row per
//! item; and the failures a user meets (unknown id, bad input, no token,
//! agent down, bad command line) give one clear line on stderr and the
//! documented exit status. No output ever holds the token.

use std::process::{Command, Output};

use serde_json::{json, Value};

mod common;

use common::{bundle, privileged, Agent, KEY};

/// `stratus` with the client's environment variables cleared.
fn bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratus"));
    cmd.env_remove("STRATUS_TOKEN")
        .env_remove("STRATUS_ENDPOINT");
    cmd
}

/// Runs `stratus` with `args` against `agent` (its endpoint and token file).
fn stratus(agent: &Agent, args: &[&str]) -> Output {
    let mut cmd = bare();
    cmd.arg("--endpoint")
        .arg(format!("http://{}", agent.addr))
        .arg("--token-file")
        .arg(agent.dir.join("api-token"))
        .args(args);
    run(agent, cmd)
}

/// Runs `cmd`; whatever it printed, the token is not in it.
fn run(agent: &Agent, mut cmd: Command) -> Output {
    let out = cmd.output().expect("run stratus");
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            agent.token.is_empty() || !text.contains(&agent.token),
            "the token was printed: {text}"
        );
    }
    out
}

/// The standard output of a command that must succeed.
fn ok(agent: &Agent, args: &[&str]) -> String {
    let out = stratus(agent, args);
    assert!(
        out.status.success(),
        "stratus {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `--output json` of a command that must succeed, parsed.
fn json_of(agent: &Agent, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let text = ok(agent, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stratus {args:?}: {e}: {text}"))
}

/// The standard error of a command that must fail with `code`; one line.
fn fails(out: Output, code: i32) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// A table's lines, each split into its cells (at runs of 2+ spaces).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Asserts `table` is a header and one row per id in `ids` (any order),
/// each row starting with its id; the rows.
fn assert_table(table: &str, header: &str, ids: &[&str]) -> Vec<Vec<String>> {
    let rows = cells(table);
    assert_eq!(rows.len(), ids.len() + 1, "{table}");
    assert_eq!(rows[0][0], header, "{table}");
    let mut firsts: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    let mut want = ids.to_vec();
    firsts.sort_unstable();
    want.sort_unstable();
    assert_eq!(firsts, want, "{table}");
    rows
}

/// The API's message for `method path`, as the client must repeat it.
fn api_error(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let (status, v) = agent.call(method, path, body.as_ref());
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{method} {path}: {v}");
    (status, format!("stratus: {message} (HTTP {status})\n"))
}

#[test]
fn every_group_of_commands_round_trips_through_the_api() {
    if !privileged() {
        return;
    }
    let mut agent = Agent::start_with_args("cli", &["--vmm", "/bin/true"]);

    // Subnets.
    let subnet = json_of(&agent, &["subnets", "create", "10.221.0.0/28"]);
    let subnet_id = subnet["subnet_id"].as_str().unwrap().to_string();
    agent
        .bridges
        .push(subnet["bridge"].as_str().unwrap().to_string());
    assert_eq!(subnet["state"], "available");
    let table = ok(&agent, &["subnets", "list"]);
    let rows = assert_table(&table, "SUBNET ID", &[&subnet_id]);
    assert_eq!(rows[1][1], "10.221.0.0/28", "{table}");
    let described = ok(&agent, &["subnets", "describe", &subnet_id]);
    assert_table(&described, "SUBNET ID", &[&subnet_id]);
    assert_eq!(
        json_of(&agent, &["subnets", "describe", &subnet_id]),
        agent.ok("GET", &format!("/v1/subnets/{subnet_id}"), None, 200)
    );
    assert_eq!(
        json_of(&agent, &["subnets", "list"]),
        agent.ok("GET", "/v1/subnets", None, 200)
    );

    // Security groups: rules from the flags, by port and CIDR and by
    // source group.
    let admin = json_of(
        &agent,
        &[
            "security-groups",
            "create",
            "admin",
            "--description",
            "admins",
        ],
    );
    let admin_id = admin["group_id"].as_str().unwrap().to_string();
    let table = ok(
        &agent,
        &[
            "security-groups",
            "create",
            "web",
            "--description",
            "web tier",
        ],
    );
    let web_id = cells(&table)[1][0].clone();
    assert!(web_id.starts_with("sg-"), "{table}");
    let table = ok(&agent, &["security-groups", "list"]);
    assert_table(&table, "GROUP ID", &[&web_id, &admin_id]);
    let after = json_of(
        &agent,
        &[
            "security-groups",
            "authorize-ingress",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "10.0.0.0/8",
            "--cidr",
            "192.168.0.0/16",
        ],
    );
    assert_eq!(
        after["ip_permissions"],
        json!([{"ip_protocol": "tcp", "from_port": 80, "to_port": 80,
            "ip_ranges": [{"cidr_ip": "10.0.0.0/8"}, {"cidr_ip": "192.168.0.0/16"}],
            "ipv6_ranges": [], "user_id_group_pairs": []}])
    );
    ok(
        &agent,
        &[
            "security-groups",
            "authorize-ingress",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "8000-8080",
            "--source-group",
            &admin_id,
        ],
    );
    ok(
        &agent,
        &[
            "security-groups",
            "authorize-egress",
            &web_id,
            "--ip-permissions",
            r#"{"ip_protocol": "udp", "from_port": 53, "to_port": 53, "ip_ranges": [{"cidr_ip": "10.221.0.1/32"}]}"#,
        ],
    );
    let table = ok(&agent, &["security-groups", "describe", &web_id]);
    let rules: Vec<Vec<String>> = cells(&table)
        .into_iter()
        .skip_while(|r| r.first().map(String::as_str) != Some("DIRECTION"))
        .skip(1)
        .collect();
    let want = [
        ["ingress", "tcp", "80", "10.0.0.0/8"],
        ["ingress", "tcp", "80", "192.168.0.0/16"],
        ["ingress", "tcp", "8000-8080", admin_id.as_str()],
        ["egress", "all", "all", "0.0.0.0/0"],
        ["egress", "udp", "53", "10.221.0.1/32"],
    ];
    assert_eq!(rules, want.map(|r| r.map(str::to_string)), "{table}");
    assert_eq!(
        json_of(&agent, &["security-groups", "describe", &web_id]),
        agent.ok("GET", &format!("/v1/security-groups/{web_id}"), None, 200)
    );
    let revoked = json_of(
        &agent,
        &[
            "security-groups",
            "revoke-egress",
            &web_id,
            "--protocol",
            "udp",
            "--port",
            "53",
            "--cidr",
            "10.221.0.1/32",
        ],
    );
    assert_eq!(
        revoked["ip_permissions_egress"].as_array().unwrap().len(),
        1
    );

    // Key pairs.
    let key_file = agent.dir.join("key.pub");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let key_path = key_file.to_str().unwrap();
    let table = ok(
        &agent,
        &["key-pairs", "import", "ops", "--public-key-file", key_path],
    );
    assert_table(&table, "KEY NAME", &["ops"]);
    assert_table(&ok(&agent, &["key-pairs", "list"]), "KEY NAME", &["ops"]);
    assert_eq!(
        json_of(&agent, &["key-pairs", "describe", "ops"]),
        agent.ok("GET", "/v1/key-pairs/ops", None, 200)
    );
    assert_eq!(
        json_of(&agent, &["key-pairs", "list"]),
        agent.ok("GET", "/v1/key-pairs", None, 200)
    );

    // Images.
    let manifest = bundle(&agent.dir);
    let image = json_of(&agent, &["images", "register", &manifest]);
    let image_id = image["image_id"].as_str().unwrap().to_string();
    assert_eq!(image["name"], "debian-12");
    assert_table(&ok(&agent, &["images", "list"]), "IMAGE ID", &[&image_id]);
    assert_eq!(
        json_of(&agent, &["images", "describe", &image_id]),
        agent.ok("GET", &format!("/v1/images/{image_id}"), None, 200)
    );

    // Instances: with /bin/true as the VMM a launch "boots" and stops.
    let user_data = agent.dir.join("user-data");
    std::fs::write(&user_data, "#cloud-config\n").unwrap();
    let run = json_of(
        &agent,
        &[
            "instances",
            "run",
            "--image-id",
            &image_id,
            "--instance-type",
            "t3.nano",
            "--subnet-id",
            &subnet_id,
            "--security-group-ids",
            &web_id,
            "--key-name",
            "ops",
            "--user-data-file",
            user_data.to_str().unwrap(),
            "--tag",
            "Name=cli-test",
            "--http-tokens",
            "required",
        ],
    );
    let inst = &run["instances"][0];
    let id = inst["instance_id"].as_str().unwrap().to_string();
    agent
        .bridges
        .push(inst["tap"].as_str().unwrap().to_string());
    assert_eq!(inst["tags"], json!({"Name": "cli-test"}));
    assert_eq!(inst["user_data"], "I2Nsb3VkLWNvbmZpZwo=");
    assert_eq!(inst["metadata_options"]["http_tokens"], "required");
    agent.wait_for_state(&id, "stopped");
    let table = ok(&agent, &["instances", "list"]);
    let rows = assert_table(&table, "INSTANCE ID", &[&id]);
    assert_eq!(rows[1][1..3], ["cli-test", "stopped"], "{table}");
    let filtered = ok(
        &agent,
        &[
            "instances",
            "list",
            "--state",
            "stopped",
            "--tag",
            "Name=cli-test",
            "--subnet-id",
            &subnet_id,
        ],
    );
    assert_table(&filtered, "INSTANCE ID", &[&id]);
    assert_table(
        &ok(&agent, &["instances", "list", "--state", "running"]),
        "INSTANCE ID",
        &[],
    );
    assert_eq!(
        json_of(&agent, &["instances", "list", "--tag", "Name=cli-test"]),
        agent.ok("GET", "/v1/instances?tag=Name%3Dcli-test", None, 200)
    );
    let details = ok(&agent, &["instances", "describe", &id]);
    let fields = cells(&details);
    for (name, value) in [
        ("instance id", id.as_str()),
        ("state", "stopped"),
        ("key name", "ops"),
        ("tags", "Name=cli-test"),
    ] {
        assert!(
            fields.contains(&vec![name.to_string(), value.to_string()]),
            "{name}: {details}"
        );
    }
    assert_eq!(
        json_of(&agent, &["instances", "describe", &id]),
        agent.ok("GET", &format!("/v1/instances/{id}"), None, 200)
    );
    let changed = json_of(
        &agent,
        &[
            "instances",
            "modify-security-groups",
            &id,
            &format!("{web_id},{admin_id}"),
        ],
    );
    assert_eq!(changed["security_group_ids"], json!([web_id, admin_id]));
    // Stop of a stopped instance is a no-op; reboot is refused.
    let table = ok(&agent, &["instances", "stop", &id]);
    assert_table(&table, "INSTANCE ID", &[&id]);
    let (status, want) = api_error(&agent, "POST", &format!("/v1/instances/{id}/reboot"), None);
    assert_eq!(status, 409);
    assert_eq!(
        fails(stratus(&agent, &["instances", "reboot", &id]), 1),
        want
    );
    // Start: the VMM runs (and exits) again.
    let started = json_of(&agent, &["instances", "start", &id]);
    assert_eq!(started["instance_id"], id);
    agent.wait_for_state(&id, "stopped");
    let console = json_of(&agent, &["instances", "console", &id, "--bytes", "100"]);
    assert_eq!(console["instance_id"], id);
    let raw = ok(&agent, &["instances", "console", &id]);
    assert_eq!(raw, console["output"].as_str().unwrap());

    // Health: the host summary, and the instance in the checks table.
    let health = ok(&agent, &["health"]);
    assert!(
        health.starts_with(&format!("agent version  {}\n", env!("CARGO_PKG_VERSION"))),
        "{health}"
    );
    assert!(health.contains("\ninstances      1 stopped\n"), "{health}");
    let checks = health.split("\n\n").nth(1).unwrap();
    let rows = assert_table(checks, "INSTANCE ID", &[&id]);
    assert_eq!(rows[1][1..3], ["stopped", "not-applicable"], "{health}");
    let doc = json_of(&agent, &["health"]);
    assert_eq!(doc["resources"]["security_groups"], 2);
    assert_eq!(doc["instance_statuses"][0]["instance_id"], id);

    // The certificate, as the API serves it; metrics as text.
    let pem = ok(&agent, &["identity-certificate"]);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(pem, agent.get_open("/v1/identity-certificate").2);
    assert!(ok(&agent, &["metrics"]).contains("stratus_agent_uptime_seconds"));

    // A group in use cannot go: the API's 409, exit 1.
    let (_, want) = api_error(
        &agent,
        "DELETE",
        &format!("/v1/security-groups/{admin_id}"),
        None,
    );
    let out = stratus(&agent, &["security-groups", "delete", &admin_id]);
    assert_eq!(fails(out, 1), want);

    // Terminate, then every resource goes.
    let table = ok(&agent, &["instances", "terminate", &id]);
    assert_eq!(
        rows_of(&table),
        [
            vec!["INSTANCE ID", "PREVIOUS STATE", "CURRENT STATE"],
            vec![id.as_str(), "stopped", "terminated"]
        ],
        "{table}"
    );
    ok(
        &agent,
        &[
            "security-groups",
            "revoke-ingress",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "8000-8080",
            "--source-group",
            &admin_id,
        ],
    );
    assert_eq!(
        ok(&agent, &["security-groups", "delete", &admin_id]),
        format!("deleted {admin_id}\n")
    );
    let out = stratus(
        &agent,
        &["security-groups", "delete", &web_id, "-o", "json"],
    );
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    ok(&agent, &["key-pairs", "delete", "ops"]);
    ok(&agent, &["images", "deregister", &image_id]);
    ok(&agent, &["subnets", "delete", &subnet_id]);
    for (group, header) in [
        ("subnets", "SUBNET ID"),
        ("security-groups", "GROUP ID"),
        ("key-pairs", "KEY NAME"),
        ("images", "IMAGE ID"),
    ] {
        assert_table(&ok(&agent, &[group, "list"]), header, &[]);
    }
}

/// A table's rows as string slices, for comparing with literals.
fn rows_of(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

#[test]
fn failures_are_one_line_on_stderr_with_the_documented_exit_status() {
    // No bridges here: nothing that needs root.
    let agent = Agent::start("cli-errors");

    // An unknown id: the API's 404 and its message.
    let missing = "subnet-0000000000000000a";
    let (status, want) = api_error(&agent, "GET", &format!("/v1/subnets/{missing}"), None);
    assert_eq!(status, 404);
    let stderr = fails(stratus(&agent, &["subnets", "describe", missing]), 1);
    assert_eq!(stderr, want);
    assert!(stderr.contains(missing), "{stderr}");
    let stderr = fails(stratus(&agent, &["key-pairs", "delete", "no such key"]), 1);
    assert_eq!(
        stderr,
        "stratus: key pair `no such key` does not exist (HTTP 404)\n"
    );

    // Bad CIDRs: the API's 400.
    for bad in ["10.0.0.1/24", "banana", "10.0.0.0/8"] {
        let (status, want) = api_error(
            &agent,
            "POST",
            "/v1/subnets",
            Some(json!({ "cidr_block": bad })),
        );
        assert_eq!(status, 400);
        assert_eq!(fails(stratus(&agent, &["subnets", "create", bad]), 1), want);
    }

    // The token: from STRATUS_TOKEN (and the endpoint from
    // STRATUS_ENDPOINT, as the agent's --listen writes it); missing; wrong
    // (never printed); an unreadable --token-file.
    let mut cmd = bare();
    cmd.env("STRATUS_TOKEN", &agent.token)
        .env("STRATUS_ENDPOINT", &agent.addr)
        .args(["images", "list"]);
    let out = run(&agent, cmd);
    assert!(out.status.success(), "{out:?}");
    let no_token = |args: &[&str]| {
        let mut cmd = bare();
        cmd.env("STRATUS_ENDPOINT", format!("http://{}", agent.addr))
            .args(args);
        cmd
    };
    let stderr = fails(run(&agent, no_token(&["images", "list"])), 1);
    if std::fs::read_to_string("/var/lib/stratus/api-token").is_ok() {
        // This host's own agent's token: wrong here, and said where from.
        assert!(
            stderr.contains("(HTTP 401); the token was read from /var/lib/stratus/api-token"),
            "{stderr}"
        );
    } else {
        assert!(
            stderr
                .starts_with("stratus: no API token: pass --token-file PATH or set STRATUS_TOKEN"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // Open routes need none.
    assert!(run(&agent, no_token(&["health"])).status.success());
    let wrong = "0123456789abcdef-not-the-token";
    let mut cmd = no_token(&["subnets", "list"]);
    cmd.env("STRATUS_TOKEN", wrong);
    let stderr = fails(run(&agent, cmd), 1);
    assert_eq!(
        stderr,
        "stratus: missing or wrong bearer token (Authorization: Bearer …) (HTTP 401); \
         the token was read from STRATUS_TOKEN\n"
    );
    assert!(!stderr.contains(wrong));
    let mut cmd = no_token(&["--token-file", "/nonexistent/token", "subnets", "list"]);
    cmd.env("STRATUS_TOKEN", &agent.token);
    let stderr = fails(run(&agent, cmd), 1);
    assert!(
        stderr.starts_with("stratus: token file /nonexistent/token: "),
        "{stderr}"
    );

    // The agent down: the endpoint is named.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut cmd = bare();
    cmd.args(["--endpoint", &endpoint, "subnets", "list"]);
    let stderr = fails(run(&agent, cmd), 1);
    assert!(
        stderr.starts_with(&format!(
            "stratus: cannot connect to the agent at {endpoint}: "
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // One that accepts and never answers: the timeout, named too.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut cmd = bare();
    cmd.args(["--endpoint", &endpoint, "--timeout", "1", "health"]);
    assert_eq!(
        fails(run(&agent, cmd), 1),
        format!("stratus: the agent at {endpoint} did not answer within 1 s\n")
    );
    drop(silent);
    let mut cmd = bare();
    cmd.args(["--endpoint", "https://127.0.0.1:8470", "health"]);
    assert_eq!(
        fails(run(&agent, cmd), 2),
        "stratus: --endpoint: \"https://127.0.0.1:8470\": https is not supported \
         (the agent serves plain HTTP); give http://\n"
    );

    // Bad usage: exit 2, nothing sent.
    for args in [
        &["subnets"][..],
        &["subnets", "describe"],
        &["instances", "run", "--image-id", "ami-1"],
        &["instances", "list", "--tag", "novalue"],
        &["--output", "yaml", "health"],
        &["nothing"],
        &[
            "security-groups",
            "authorize-ingress",
            "sg-1",
            "--cidr",
            "1.2.3.4/32",
        ],
    ] {
        let out = stratus(&agent, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = stratus(
        &agent,
        &[
            "security-groups",
            "authorize-ingress",
            "sg-1",
            "--protocol",
            "tcp",
            "--cidr",
            "1.2.3.4/32",
        ],
    );
    assert_eq!(
        fails(out, 2),
        "stratus: --protocol tcp needs --port PORT or --port FROM-TO\n"
    );
}
