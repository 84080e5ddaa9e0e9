//! Every route of the agent's API, as `openapi.json` documents it, called
//! with bad input: each call gets a 4xx with the API's JSON error (a code
//! and a message) and changes nothing — not the resources the list routes
//! show, not the links (bridges, taps), not the files in the state
//! directory.
//!
//! The table of bad cases is checked against the document first, so a
//! route cannot be added without bad-input cases. On top of the table,
//! every authenticated route is called with good input and a missing or
//! wrong token (if authentication let such a call through, it would
//! change state), and every documented path with each method it does not
//! take.
//!
//! The agent runs in a network namespace of this test's own, so the links
//! compared are exactly the agent's and no other test's bridges can come
//! and go in between.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

mod common;

use common::{bundle, privileged, Agent, KEY};

/// Open routes that take no input at all (no path parameter, query or
/// body): a wrong method is their only bad input, and the generated
/// wrong-method calls make it. The coverage check holds the document to
/// this claim.
const NO_INPUT: &[(&str, &str)] = &[
    ("GET /v1/health", "a probe: no parameters, no body"),
    ("GET /metrics", "Prometheus scrape: no parameters, no body"),
    (
        "GET /v1/identity-certificate",
        "a public certificate: no parameters, no body",
    ),
];

/// Methods a path might be called with; those it does not document must
/// be refused with 405.
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

/// A documented route, as `"METHOD /template"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    key: String,
    /// Whether it needs the bearer token (`security` not `[]`).
    authenticated: bool,
    /// Whether it takes a path parameter, a query parameter or a body.
    takes_input: bool,
}

/// Every route of `openapi.json`.
fn documented_routes() -> Vec<Route> {
    let doc: Value = serde_json::from_str(stratus_agent::api::OPENAPI_JSON).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !METHODS.contains(&method.to_uppercase().as_str()) {
                continue;
            }
            let params = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
            routes.push(Route {
                key: format!("{} {path}", method.to_uppercase()),
                authenticated: op.get("security") != Some(&json!([])),
                takes_input: params(&item["parameters"])
                    || params(&op["parameters"])
                    || op.get("requestBody").is_some(),
            });
        }
    }
    routes.sort();
    routes
}

/// One bad call and the answer it must get.
#[derive(Debug, Clone)]
struct Case {
    /// The documented route it attacks (`"METHOD /template"`).
    route: String,
    method: String,
    path: String,
    body: Option<String>,
    token: Token,
    status: u16,
    code: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Right,
    Missing,
    /// As long as the right one, last character changed.
    Wrong,
    /// The right one's first half.
    Truncated,
}

/// What the agent holds when the bad calls start.
#[derive(Debug, Clone)]
struct Fixture {
    bundle_dir: String,
    manifest: String,
    /// Registered from `manifest`, used by `stopped`.
    image: String,
    /// Registered from `manifest` under the name `spare`, used by nothing.
    spare_image: String,
    /// 10.220.0.0/28, with `stopped` in it.
    subnet: String,
    spare_subnet: String,
    /// Has the ingress rules tcp 443 from 0.0.0.0/0 and tcp 22 from
    /// `admin`; `stopped` is in it.
    web: String,
    admin: String,
    spare_group: String,
    /// The key pair `ops` (its id).
    key_pair_id: String,
    stopped: String,
    stopped_ip: String,
    terminated: String,
}

impl Fixture {
    /// Well-formed ids of nothing: enough to build the table for the
    /// coverage check, which needs no agent.
    fn placeholder() -> Fixture {
        let id = |prefix: &str, n: u8| format!("{prefix}{n:017x}");
        Fixture {
            bundle_dir: "/b".into(),
            manifest: "/b/manifest.json".into(),
            image: id("ami-", 1),
            spare_image: id("ami-", 2),
            subnet: id("subnet-", 1),
            spare_subnet: id("subnet-", 2),
            web: id("sg-", 1),
            admin: id("sg-", 2),
            spare_group: id("sg-", 3),
            key_pair_id: id("key-", 1),
            stopped: id("i-", 1),
            stopped_ip: "10.220.0.4".into(),
            terminated: id("i-", 2),
        }
    }
}

/// `template` with its one `{…}` parameter replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    match (template.find('{'), template.find('}')) {
        (Some(open), Some(close)) => {
            format!("{}{value}{}", &template[..open], &template[close + 1..])
        }
        _ => template.to_string(),
    }
}

/// A request to `route` that is well formed and names things that exist
/// (most would change something if let through): what the authentication
/// cases send with a missing or wrong token, so that the token is all
/// they get wrong.
fn good_request(route: &str, fx: &Fixture) -> (String, Option<Value>) {
    let (_, template) = route.split_once(' ').unwrap();
    let rule = |protocol: &str, port: u16, cidr: &str| {
        json!({"ip_permissions": [{"ip_protocol": protocol, "from_port": port, "to_port": port,
            "ip_ranges": [{"cidr_ip": cidr}]}]})
    };
    let body = match route {
        "POST /v1/images" => Some(json!({"manifest_path": fx.manifest, "name": "another"})),
        "POST /v1/subnets" => Some(json!({"cidr_block": "10.221.0.0/24"})),
        "POST /v1/key-pairs" => Some(json!({"key_name": "another", "public_key_material": KEY})),
        "POST /v1/security-groups" => Some(json!({"group_name": "another", "description": "d"})),
        "POST /v1/security-groups/{group_id}/authorize-ingress" => {
            Some(rule("tcp", 80, "0.0.0.0/0"))
        }
        "POST /v1/security-groups/{group_id}/revoke-ingress" => Some(rule("tcp", 443, "0.0.0.0/0")),
        "POST /v1/security-groups/{group_id}/authorize-egress" => {
            Some(rule("tcp", 25, "10.0.0.0/8"))
        }
        "POST /v1/security-groups/{group_id}/revoke-egress" => Some(
            json!({"ip_permissions": [{"ip_protocol": "-1", "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}]}),
        ),
        "POST /v1/instances" => Some(run_body(fx)),
        "PUT /v1/instances/{instance_id}/security-groups" => {
            Some(json!({"security_group_ids": [fx.admin]}))
        }
        _ => None,
    };
    let id = match template {
        "/v1/images/{image_id}" => fx.spare_image.as_str(),
        "/v1/subnets/{subnet_id}" => fx.spare_subnet.as_str(),
        "/v1/key-pairs/{key_name}" => "ops",
        "/v1/security-groups/{group_id}" if route.starts_with("DELETE") => fx.spare_group.as_str(),
        t if t.starts_with("/v1/security-groups/{group_id}") => fx.web.as_str(),
        t if t.starts_with("/v1/instances/{instance_id}") => fx.stopped.as_str(),
        t => {
            assert!(!t.contains('{'), "no good request for {route}: add one");
            ""
        }
    };
    (fill(template, id), body)
}

/// The client token the fixture's stopped instance was launched with
/// (with [`run_body`] and `key_name` `ops`).
const STOPPED_TOKEN: &str = "fixture-stopped";

fn run_body(fx: &Fixture) -> Value {
    json!({"image_id": fx.image, "instance_type": "t3.nano", "subnet_id": fx.subnet,
        "security_group_ids": [fx.web]})
}

/// The hand-written bad cases, route by route.
#[derive(Debug, Default)]
struct Table(Vec<Case>);

/// A kind of id in paths, and the codes for one that is malformed or
/// names nothing.
struct IdKind {
    prefix: &'static str,
    malformed: &'static str,
    not_found: &'static str,
}

const IMAGE: IdKind = IdKind {
    prefix: "ami-",
    malformed: "InvalidAMIID.Malformed",
    not_found: "InvalidAMIID.NotFound",
};
const SUBNET: IdKind = IdKind {
    prefix: "subnet-",
    malformed: "InvalidSubnetID.Malformed",
    not_found: "InvalidSubnetID.NotFound",
};
const GROUP: IdKind = IdKind {
    prefix: "sg-",
    malformed: "InvalidGroupId.Malformed",
    not_found: "InvalidGroup.NotFound",
};
const INSTANCE: IdKind = IdKind {
    prefix: "i-",
    malformed: "InvalidInstanceID.Malformed",
    not_found: "InvalidInstanceID.NotFound",
};

impl Table {
    fn add(
        &mut self,
        route: &str,
        path: &str,
        body: Option<&str>,
        status: u16,
        code: &'static str,
    ) {
        self.0.push(Case {
            route: route.to_string(),
            method: route.split_once(' ').unwrap().0.to_string(),
            path: path.to_string(),
            body: body.map(str::to_string),
            token: Token::Right,
            status,
            code,
        });
    }

    /// Each of `bodies` to `path`, all answered `status` `code`.
    fn bodies<B: AsRef<str>>(
        &mut self,
        route: &str,
        path: &str,
        (status, code): (u16, &'static str),
        bodies: impl IntoIterator<Item = B>,
    ) {
        for body in bodies {
            self.add(route, path, Some(body.as_ref()), status, code);
        }
    }

    /// Bodies that are not the request at all, for a route that takes one.
    fn not_a_request(&mut self, route: &str, path: &str) {
        let bodies = ["not json", "{\"truncated\": ", "[]", "42", "{}", "null"];
        self.bodies(route, path, BAD_REQUEST, bodies);
        // No body, hence no JSON content type.
        self.add(route, path, None, 415, "InvalidRequest");
    }

    /// The ways the id in `route`'s path can be wrong, `other_kind` being
    /// a real id of another kind. `body` is a good one, so that the id is
    /// what the call gets wrong.
    fn bad_ids(&mut self, route: &str, kind: &IdKind, other_kind: &str, body: Option<&str>) {
        let template = route.split_once(' ').unwrap().1;
        let p = kind.prefix;
        for bad in [
            format!("{p}zzz"),
            format!("{p}{}", "0".repeat(16)),
            format!("{p}0123456789ABCDEF0"),
            format!("{p}{}", "0".repeat(1000)),
            other_kind.to_string(),
            "..".to_string(),
        ] {
            self.add(route, &fill(template, &bad), body, 400, kind.malformed);
        }
        // Not UTF-8 once percent-decoded.
        self.add(route, &fill(template, "%ff"), body, 400, "InvalidRequest");
        for unknown in [format!("{p}00000000"), format!("{p}{}", "0".repeat(17))] {
            self.add(route, &fill(template, &unknown), body, 404, kind.not_found);
        }
    }
}

/// A body the API cannot take as the request (not JSON, wrong types,
/// missing or unknown fields).
const BAD_REQUEST: (u16, &str) = (400, "InvalidRequest");
/// A request that is well formed but whose values are not allowed.
const INVALID: (u16, &str) = (400, "InvalidParameterValue");

fn table(fx: &Fixture) -> Vec<Case> {
    let mut t = Table::default();
    // The list routes take no parameters: a filter they do not have is
    // refused, not ignored (which would answer with everything).
    let lists = [
        "/v1/images",
        "/v1/subnets",
        "/v1/key-pairs",
        "/v1/security-groups",
    ];
    for path in lists {
        for query in ["bogus=1", "name=web", "limit=abc"] {
            let (route, bad) = (format!("GET {path}"), format!("{path}?{query}"));
            t.add(&route, &bad, None, 400, "InvalidRequest");
        }
    }

    // Images.
    let (route, path) = ("POST /v1/images", "/v1/images");
    let manifest = |path: &str, rest: &str| format!(r#"{{"manifest_path": "{path}"{rest}}}"#);
    let named = |name: &str| manifest(&fx.manifest, &format!(r#", "name": "{name}""#));
    t.not_a_request(route, path);
    let bodies = [
        r#"{"manifest_path": 7}"#.to_string(),
        manifest(&fx.manifest, r#", "bogus": 1"#),
        manifest(&fx.manifest, r#", "name": 5"#),
    ];
    t.bodies(route, path, BAD_REQUEST, bodies);
    let bodies = [
        manifest("relative/manifest.json", ""),
        manifest("/nonexistent/manifest.json", ""),
        // A file that is not a manifest, a directory, a device that never
        // ends (read whole, it would exhaust the agent's memory) and a
        // FIFO (opened, it would wait for a writer for good).
        manifest(&format!("{}/disk.qcow2", fx.bundle_dir), ""),
        manifest(&fx.bundle_dir, ""),
        manifest("/dev/zero", ""),
        manifest(&format!("{}/fifo", fx.bundle_dir), ""),
        named(""),
        named(&"n".repeat(129)),
    ];
    t.bodies(route, path, INVALID, bodies);
    // The manifest's name, and `spare`, are taken.
    let taken = [manifest(&fx.manifest, ""), named("spare")];
    t.bodies(route, path, (409, "InvalidAMIName.Duplicate"), taken);
    t.bad_ids("GET /v1/images/{image_id}", &IMAGE, &fx.subnet, None);
    let route = "DELETE /v1/images/{image_id}";
    t.bad_ids(route, &IMAGE, &fx.subnet, None);
    let in_use = format!("/v1/images/{}", fx.image);
    t.add(route, &in_use, None, 409, "InvalidAMIID.InUse");

    // Subnets.
    let (route, path) = ("POST /v1/subnets", "/v1/subnets");
    let cidr = |c: &str| format!(r#"{{"cidr_block": "{c}"}}"#);
    t.not_a_request(route, path);
    let bodies = [
        r#"{"cidr_block": 10}"#,
        r#"{"cidr_block": null}"#,
        r#"{"cidr_block": "10.223.0.0/24", "bogus": true}"#,
    ];
    t.bodies(route, path, BAD_REQUEST, bodies);
    let bad_cidrs = [
        "10.223.0.0/33",
        "10.0.0.0/8",
        "10.223.0.0/29",
        "10.223.0.1/24",
        "300.1.0.0/24",
        "2001:db8::/64",
        "banana",
        "",
    ];
    t.bodies(route, path, INVALID, bad_cidrs.map(cidr));
    // Overlaps the fixture's subnet.
    let overlapping = [cidr("10.220.0.0/24")];
    t.bodies(route, path, (409, "InvalidSubnet.Conflict"), overlapping);
    t.bad_ids("GET /v1/subnets/{subnet_id}", &SUBNET, &fx.image, None);
    let route = "DELETE /v1/subnets/{subnet_id}";
    t.bad_ids(route, &SUBNET, &fx.image, None);
    let in_use = format!("/v1/subnets/{}", fx.subnet);
    t.add(route, &in_use, None, 409, "DependencyViolation");

    // Key pairs.
    let (route, path) = ("POST /v1/key-pairs", "/v1/key-pairs");
    let import = |name: &str, material: &str| {
        json!({"key_name": name, "public_key_material": material}).to_string()
    };
    t.not_a_request(route, path);
    let bodies = [
        r#"{"key_name": "x"}"#.to_string(),
        json!({"key_name": 1, "public_key_material": KEY}).to_string(),
        json!({"key_name": "x", "public_key_material": KEY, "bogus": 1}).to_string(),
    ];
    t.bodies(route, path, BAD_REQUEST, bodies);
    let bad_names = ["", &"k".repeat(256), "tab\there", "clé"];
    t.bodies(route, path, INVALID, bad_names.map(|n| import(n, KEY)));
    let bad_keys = [
        "",
        "not a key",
        "ssh-rsa AAAA",
        &KEY.replace("ssh-ed25519", "ssh-dss"),
        &format!("{KEY}\n{KEY}"),
    ];
    let bad_keys = bad_keys.map(|k| import("x", k));
    t.bodies(route, path, (400, "InvalidKey.Format"), bad_keys);
    let taken = [import("ops", KEY)];
    t.bodies(route, path, (409, "InvalidKeyPair.Duplicate"), taken);
    for route in [
        "GET /v1/key-pairs/{key_name}",
        "DELETE /v1/key-pairs/{key_name}",
    ] {
        // Names are free text: anything but an existing name is unknown
        // (the key pair's id and another case included).
        for name in [
            "nobody",
            "OPS",
            &fx.key_pair_id,
            &"k".repeat(300),
            "no%20body",
        ] {
            let path = format!("/v1/key-pairs/{name}");
            t.add(route, &path, None, 404, "InvalidKeyPair.NotFound");
        }
        t.add(route, "/v1/key-pairs/%ff", None, 400, "InvalidRequest");
    }

    // Security groups.
    let (route, path) = ("POST /v1/security-groups", "/v1/security-groups");
    let group = |name: &str, description: &str| {
        json!({"group_name": name, "description": description}).to_string()
    };
    t.not_a_request(route, path);
    let bodies = [
        r#"{"group_name": "x"}"#,
        r#"{"group_name": ["x"], "description": "d"}"#,
        r#"{"group_name": "x", "description": "d", "vpc_id": "vpc-1"}"#,
    ];
    t.bodies(route, path, BAD_REQUEST, bodies);
    let bodies = [
        group("", "d"),
        group("x", ""),
        group("sg-x", "d"),
        group("SG-x", "d"),
        group(&"g".repeat(256), "d"),
        group("bell\u{7}", "d"),
        group("x", "naïve"),
    ];
    t.bodies(route, path, INVALID, bodies);
    let taken = [group("web", "again")];
    t.bodies(route, path, (409, "InvalidGroup.Duplicate"), taken);
    t.bad_ids(
        "GET /v1/security-groups/{group_id}",
        &GROUP,
        &fx.stopped,
        None,
    );
    let route = "DELETE /v1/security-groups/{group_id}";
    t.bad_ids(route, &GROUP, &fx.stopped, None);
    // `admin` is named by a rule of `web`; `web` has an instance.
    for id in [&fx.admin, &fx.web] {
        let path = format!("/v1/security-groups/{id}");
        t.add(route, &path, None, 409, "DependencyViolation");
    }
    // Rules as JSON text: `rules` makes a request of permissions.
    let rules = |ps: &[&str]| format!(r#"{{"ip_permissions": [{}]}}"#, ps.join(", "));
    let any = r#""ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]"#;
    let tcp = |ports: &str| format!(r#"{{"ip_protocol": "tcp", {ports}, {any}}}"#);
    let new_rule = tcp(r#""from_port": 8080, "to_port": 8080"#);
    let web_443 = tcp(r#""from_port": 443, "to_port": 443"#);
    let default_egress = format!(r#"{{"ip_protocol": "-1", {any}}}"#);
    let sixty_one: Vec<String> = (0..61)
        .map(|i| format!(r#"{{"cidr_ip": "10.9.{i}.0/24"}}"#))
        .collect();
    let over_quota = rules(&[&format!(
        r#"{{"ip_protocol": "udp", "from_port": 53, "to_port": 53, "ip_ranges": [{}]}}"#,
        sixty_one.join(", ")
    )]);
    let not_rules = [
        r#"{"ip_permissions": {}}"#.to_string(),
        rules(&[&tcp(r#""from_port": "22", "to_port": 22"#)]),
        rules(&[&tcp(r#""from_port": 1e10, "to_port": 22"#)]),
        rules(&[&tcp(
            r#""from_port": 22, "to_port": 22, "prefix_list_ids": []"#,
        )]),
        rules(&[r#"{"ip_protocol": "-1", "ip_ranges": [{"cidr_ip": "0.0.0.0/0", "x": 1}]}"#]),
    ];
    let invalid_rules = [
        rules(&[]),
        rules(&[&tcp(r#""from_port": 22, "to_port": 70000"#)]),
        rules(&[&tcp(r#""from_port": -1, "to_port": 22"#)]),
        rules(&[&tcp(r#""from_port": 9, "to_port": 1"#)]),
        rules(&[&tcp(r#""from_port": null, "to_port": null"#)]),
        rules(&[&format!(r#"{{"ip_protocol": "tcpx", {any}}}"#)]),
        rules(&[&format!(r#"{{"ip_protocol": "256", {any}}}"#)]),
        rules(&[&format!(
            r#"{{"ip_protocol": "icmp", "from_port": -1, "to_port": 3, {any}}}"#
        )]),
        rules(&[&format!(
            r#"{{"ip_protocol": "icmp", "from_port": 256, "to_port": 0, {any}}}"#
        )]),
        rules(&[r#"{"ip_protocol": "udp", "ip_ranges": [{"cidr_ip": "10.0.0.0/33"}]}"#]),
        rules(&[r#"{"ip_protocol": "udp", "ip_ranges": [{"cidr_ip": "::/0"}]}"#]),
        rules(&[r#"{"ip_protocol": "udp", "ipv6_ranges": [{"cidr_ipv6": "10.0.0.0/8"}]}"#]),
        rules(&[r#"{"ip_protocol": "icmp", "ipv6_ranges": [{"cidr_ipv6": "::/0"}]}"#]),
        // No source, and a source that is not a group id.
        rules(&[r#"{"ip_protocol": "tcp", "from_port": 22, "to_port": 22}"#]),
        rules(&[r#"{"ip_protocol": "-1", "user_id_group_pairs": [{"group_id": "sg-zzz"}]}"#]),
    ];
    let unknown_group =
        rules(&[r#"{"ip_protocol": "-1", "user_id_group_pairs": [{"group_id": "sg-00000000"}]}"#]);
    for route in [
        "POST /v1/security-groups/{group_id}/authorize-ingress",
        "POST /v1/security-groups/{group_id}/revoke-ingress",
        "POST /v1/security-groups/{group_id}/authorize-egress",
        "POST /v1/security-groups/{group_id}/revoke-egress",
    ] {
        let path = &fill(route.split_once(' ').unwrap().1, &fx.web);
        t.bad_ids(route, &GROUP, &fx.subnet, Some(&rules(&[&new_rule])));
        t.not_a_request(route, path);
        t.bodies(route, path, BAD_REQUEST, &not_rules);
        t.bodies(route, path, INVALID, &invalid_rules);
        t.bodies(route, path, (404, GROUP.not_found), [&unknown_group]);
        let existing = if route.contains("ingress") {
            &web_443
        } else {
            &default_egress
        };
        // Some with a good rule beside the bad one, which must not be
        // applied either: all or nothing.
        if route.contains("authorize") {
            let limit = (400, "RulesPerSecurityGroupLimitExceeded");
            t.bodies(route, path, limit, [&over_quota]);
            let bodies = [
                rules(&[existing]),
                rules(&[&new_rule, existing]),
                rules(&[&new_rule, &new_rule]),
            ];
            t.bodies(route, path, (409, "InvalidPermission.Duplicate"), bodies);
        } else {
            let bodies = [rules(&[&new_rule]), rules(&[existing, &new_rule])];
            t.bodies(route, path, (400, "InvalidPermission.NotFound"), bodies);
        }
    }

    // Instances.
    let (route, path) = ("POST /v1/instances", "/v1/instances");
    let base = run_body(fx);
    // The good launch with `changes` (a null removes the field).
    let with = |changes: Value| {
        let mut b = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            match v {
                Value::Null => b.as_object_mut().unwrap().remove(k),
                v => b.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        b.to_string()
    };
    let big_user_data = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(vec![0u8; 16 * 1024 + 1])
    };
    let many_tags: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_tag_key: serde_json::Map<String, Value> =
        [("k".repeat(129), json!("v"))].into_iter().collect();
    let six_groups: Vec<String> = (1..=6).map(|i| format!("sg-{i:08x}")).collect();
    t.not_a_request(route, path);
    let bodies = [
        with(json!({"instance_type": null})),
        with(json!({"image_id": null})),
        with(json!({"image_id": 5})),
        with(json!({"bogus": 1})),
        with(json!({"count": -1})),
        with(json!({"count": "1"})),
        with(json!({"count": 4_294_967_296u64})),
        with(json!({"tags": ["a"]})),
        with(json!({"metadata_options": {"http_put_response_hop_limit": 300}})),
        with(json!({"metadata_options": {"bogus": 1}})),
    ];
    t.bodies(route, path, BAD_REQUEST, bodies);
    let bodies = [
        with(json!({"count": 0})),
        with(json!({"count": 21})),
        with(json!({"instance_type": "z9.huge"})),
        with(json!({"instance_type": ""})),
        with(json!({"security_group_ids": []})),
        with(json!({"security_group_ids": null})),
        with(json!({"security_group_ids": [fx.web, fx.web]})),
        with(json!({ "security_group_ids": six_groups })),
        with(json!({"user_data": "%%%"})),
        with(json!({ "user_data": big_user_data })),
        with(json!({ "tags": many_tags })),
        with(json!({"tags": {"": "v"}})),
        with(json!({ "tags": long_tag_key })),
        with(json!({"tags": {"k": "v".repeat(257)}})),
        with(json!({"client_token": ""})),
        with(json!({"client_token": "t".repeat(65)})),
        with(json!({"private_ip_address": "banana"})),
        // The gateway, an address outside the subnet, one for two.
        with(json!({"private_ip_address": "10.220.0.1"})),
        with(json!({"private_ip_address": "10.99.0.9"})),
        with(json!({"private_ip_address": "10.220.0.9", "count": 2})),
        with(json!({"metadata_options": {"http_put_response_hop_limit": 65}})),
        with(json!({"metadata_options": {"http_put_response_hop_limit": 0}})),
        with(json!({"metadata_options": {"http_tokens": "sometimes"}})),
        with(json!({"metadata_options": {"http_endpoint": "maybe"}})),
    ];
    t.bodies(route, path, INVALID, bodies);
    let malformed_group = (400, "InvalidGroupId.Malformed");
    let malformed = [with(json!({"security_group_ids": ["web"]}))];
    t.bodies(route, path, malformed_group, malformed);
    for (changes, code) in [
        (json!({"image_id": "debian"}), IMAGE.malformed),
        (json!({"image_id": "ami-XYZ"}), IMAGE.malformed),
        (json!({"subnet_id": "lan"}), SUBNET.malformed),
        (json!({"subnet_id": ""}), SUBNET.malformed),
    ] {
        t.add(route, path, Some(&with(changes)), 400, code);
    }
    // The stopped instance's token with other parameters (it was
    // launched with key `ops`).
    let mismatch = (400, "IdempotentParameterMismatch");
    let bodies = [
        with(json!({ "client_token": STOPPED_TOKEN })),
        with(
            json!({"client_token": STOPPED_TOKEN, "key_name": "ops", "instance_type": "t3.micro"}),
        ),
        with(json!({"client_token": STOPPED_TOKEN, "key_name": "ops", "count": 2})),
        with(json!({"client_token": STOPPED_TOKEN, "key_name": "ops", "tags": {"k": "v"}})),
    ];
    t.bodies(route, path, mismatch, bodies);
    for (changes, code) in [
        (
            json!({"image_id": "ami-00000000000000000"}),
            IMAGE.not_found,
        ),
        (
            json!({"subnet_id": "subnet-00000000000000000"}),
            SUBNET.not_found,
        ),
        (
            json!({"security_group_ids": ["sg-00000000000000000"]}),
            GROUP.not_found,
        ),
        (json!({"key_name": "nobody"}), "InvalidKeyPair.NotFound"),
    ] {
        t.add(route, path, Some(&with(changes)), 404, code);
    }
    for (changes, code) in [
        (
            json!({"private_ip_address": fx.stopped_ip}),
            "InvalidIPAddress.InUse",
        ),
        // A /28 has 11 addresses for instances; the stopped one holds one.
        (json!({"count": 11}), "InsufficientFreeAddressesInSubnet"),
        // More memory than this host has (20 × 32 GiB).
        (
            json!({"instance_type": "m5.2xlarge", "count": 20}),
            "InsufficientInstanceCapacity",
        ),
    ] {
        t.add(route, path, Some(&with(changes)), 409, code);
    }
    let route = "GET /v1/instances";
    for (query, code) in [
        ("state=sleeping", "InvalidParameterValue"),
        ("state=", "InvalidParameterValue"),
        // Decoded lossily: a state named U+FFFD.
        ("state=%ff", "InvalidParameterValue"),
        ("tag=novalue", "InvalidParameterValue"),
        ("bogus=1", "InvalidRequest"),
        ("state=running&state=stopped", "InvalidRequest"),
    ] {
        t.add(route, &format!("/v1/instances?{query}"), None, 400, code);
    }
    let group_change = json!({ "security_group_ids": [fx.admin] }).to_string();
    for route in [
        "GET /v1/instances/{instance_id}",
        "POST /v1/instances/{instance_id}/stop",
        "POST /v1/instances/{instance_id}/start",
        "POST /v1/instances/{instance_id}/reboot",
        "POST /v1/instances/{instance_id}/terminate",
        "GET /v1/instances/{instance_id}/console",
        "PUT /v1/instances/{instance_id}/security-groups",
    ] {
        let body = route.starts_with("PUT").then_some(group_change.as_str());
        t.bad_ids(route, &INSTANCE, &fx.web, body);
    }
    // Actions its state does not allow.
    let at = |id: &str, action: &str| format!("/v1/instances/{id}/{action}");
    for (id, action) in [
        (&fx.terminated, "stop"),
        (&fx.terminated, "start"),
        (&fx.stopped, "reboot"),
        (&fx.terminated, "reboot"),
    ] {
        let route = format!("POST /v1/instances/{{instance_id}}/{action}");
        let path = at(id, action);
        t.add(&route, &path, None, 409, "IncorrectInstanceState");
    }
    let route = "GET /v1/instances/{instance_id}/console";
    for query in ["bytes=abc", "bytes=-1", "bytes=1e3", "bogus=1"] {
        let path = format!("{}?{query}", at(&fx.stopped, "console"));
        t.add(route, &path, None, 400, "InvalidRequest");
    }
    let route = "PUT /v1/instances/{instance_id}/security-groups";
    let path = &at(&fx.stopped, "security-groups");
    let groups = |ids: Value| json!({ "security_group_ids": ids }).to_string();
    t.not_a_request(route, path);
    let bodies = [
        groups(json!(fx.admin)),
        groups(json!([1])),
        r#"{"groups": []}"#.to_string(),
    ];
    t.bodies(route, path, BAD_REQUEST, bodies);
    let bodies = [
        groups(json!([])),
        groups(json!([fx.admin, fx.admin])),
        groups(json!(six_groups)),
    ];
    t.bodies(route, path, INVALID, bodies);
    let malformed = [groups(json!(["web"])), groups(json!([fx.stopped]))];
    t.bodies(route, path, malformed_group, malformed);
    let unknown = [groups(json!([fx.admin, "sg-00000000000000000"]))];
    t.bodies(route, path, (404, GROUP.not_found), unknown);
    let terminated = at(&fx.terminated, "security-groups");
    let body = Some(group_change.as_str());
    t.add(route, &terminated, body, 409, "IncorrectInstanceState");
    t.0
}

/// The authentication cases: every authenticated route with its good
/// request and a missing, wrong or truncated token.
fn auth_cases(routes: &[Route], fx: &Fixture) -> Vec<Case> {
    let mut cases = Vec::new();
    for route in routes.iter().filter(|r| r.authenticated) {
        let (path, body) = good_request(&route.key, fx);
        for token in [Token::Missing, Token::Wrong, Token::Truncated] {
            cases.push(Case {
                route: route.key.clone(),
                method: route.key.split_once(' ').unwrap().0.to_string(),
                path: path.clone(),
                body: body.as_ref().map(Value::to_string),
                token,
                status: 401,
                code: "AuthFailure",
            });
        }
    }
    cases
}

/// Every documented path called with each method it does not document.
fn wrong_method_cases(routes: &[Route], fx: &Fixture) -> Vec<Case> {
    let mut by_path: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    for r in routes {
        by_path
            .entry(r.key.split_once(' ').unwrap().1)
            .or_default()
            .push(r);
    }
    let mut cases = Vec::new();
    for (template, documented) in by_path {
        let (path, _) = good_request(&documented[0].key, fx);
        for method in METHODS {
            if documented
                .iter()
                .any(|r| r.key.starts_with(&format!("{method} ")))
            {
                continue;
            }
            cases.push(Case {
                route: documented[0].key.clone(),
                method: method.to_string(),
                path: path.clone(),
                body: Some("{}".into()),
                token: Token::Right,
                status: 405,
                code: "UnsupportedOperation",
            });
        }
        assert!(
            cases.iter().any(|c| c.path == path),
            "{template} takes every method: nothing to refuse"
        );
    }
    cases
}

/// The table is whole: every documented route has hand-written bad cases
/// (or, open and without input, is in [`NO_INPUT`]), and every case and
/// exemption names a documented route.
fn check_coverage(routes: &[Route], table: &[Case]) {
    let documented: BTreeSet<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    for case in table {
        assert!(
            documented.contains(case.route.as_str()),
            "the table names {}, which openapi.json does not document",
            case.route
        );
    }
    let mut missing = Vec::new();
    for route in routes {
        let covered = table.iter().any(|c| c.route == route.key);
        let exempt = NO_INPUT.iter().find(|(r, _)| *r == route.key);
        if let Some((key, _)) = exempt {
            assert!(
                !route.authenticated && !route.takes_input,
                "{key} is in NO_INPUT but openapi.json gives it input or a token"
            );
        } else if !covered {
            missing.push(route.key.as_str());
        }
    }
    assert!(
        missing.is_empty(),
        "routes without bad-input cases (add them to the table): {missing:?}"
    );
    for (key, reason) in NO_INPUT {
        assert!(
            documented.contains(key),
            "NO_INPUT names {key}: undocumented"
        );
        assert!(!reason.is_empty());
    }
}

#[test]
fn every_documented_route_has_bad_input_cases() {
    let routes = documented_routes();
    assert!(routes.len() > 20, "{routes:?}");
    let fx = Fixture::placeholder();
    check_coverage(&routes, &table(&fx));
    // Every authenticated route has a good request for its token cases.
    assert!(!auth_cases(&routes, &fx).is_empty());
    assert!(!wrong_method_cases(&routes, &fx).is_empty());
}

/// What a bad call must leave as it was.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    /// Each list route's answer.
    resources: BTreeMap<&'static str, Value>,
    /// The links in the agent's network namespace: name and master.
    links: BTreeSet<(String, String)>,
    /// Every file in the state directory but the database's, by path.
    files: BTreeMap<String, Vec<u8>>,
}

/// The state database and its WAL: their bytes change without their
/// content changing (checkpoints), so the content is compared through the
/// list routes instead.
const DATABASE_FILES: &[&str] = &["state.db", "state.db-wal", "state.db-shm"];

fn snapshot(agent: &Agent) -> Snapshot {
    let mut resources = BTreeMap::new();
    for path in [
        "/v1/images",
        "/v1/subnets",
        "/v1/key-pairs",
        "/v1/security-groups",
        "/v1/instances",
    ] {
        resources.insert(path, agent.ok("GET", path, None, 200));
    }
    let out = Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let links = links
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (field("ifname"), field("master"))
        })
        .collect();
    let mut files = BTreeMap::new();
    read_tree(&agent.dir, &agent.dir, &mut files);
    Snapshot {
        resources,
        links,
        files,
    }
}

fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            read_tree(root, &path, out);
        } else if DATABASE_FILES.contains(&name.as_str()) {
            continue;
        } else if kind.is_file() {
            out.insert(name, std::fs::read(&path).unwrap());
        } else {
            // A FIFO, socket or symlink: that it is there (a FIFO would
            // block a read).
            out.insert(name, Vec::new());
        }
    }
}

/// What differs between two snapshots, briefly.
fn differences(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = Vec::new();
    for (path, v) in &before.resources {
        if after.resources.get(path) != Some(v) {
            out.push(format!(
                "GET {path}: {v}\n  became {}",
                after.resources[path]
            ));
        }
    }
    if before.links != after.links {
        out.push(format!(
            "links {:?}\n  became {:?}",
            before.links, after.links
        ));
    }
    let names: BTreeSet<&String> = before.files.keys().chain(after.files.keys()).collect();
    for name in names {
        if before.files.get(name) != after.files.get(name) {
            out.push(format!("file {name} changed, appeared or went"));
        }
    }
    out.join("\n")
}

/// Moves this thread (and so the agent and the `ip` commands it starts)
/// into a network namespace of its own, with loopback up for the API.
fn private_network_namespace() {
    // SAFETY: unshare with a valid flag; it changes only this thread's
    // namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
}

/// Makes the fixture's resources through the API.
fn set_up(agent: &mut Agent) -> Fixture {
    let manifest = bundle(&agent.dir);
    let bundle_dir = Path::new(&manifest).parent().unwrap().display().to_string();
    let fifo = std::ffi::CString::new(format!("{bundle_dir}/fifo")).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path and a valid mode.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let id = |v: &Value, field: &str| v[field].as_str().unwrap().to_string();
    let register = |name: Option<&str>| {
        let mut body = json!({ "manifest_path": manifest });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        id(&agent.ok("POST", "/v1/images", Some(body), 201), "image_id")
    };
    let (image, spare_image) = (register(None), register(Some("spare")));
    let mut subnet = |cidr: &str| {
        let s = agent.ok(
            "POST",
            "/v1/subnets",
            Some(json!({ "cidr_block": cidr })),
            201,
        );
        agent.bridges.push(id(&s, "bridge"));
        id(&s, "subnet_id")
    };
    let (subnet, spare_subnet) = (subnet("10.220.0.0/28"), subnet("10.222.0.0/28"));
    let group = |name: &str| {
        let g = json!({"group_name": name, "description": "d"});
        id(
            &agent.ok("POST", "/v1/security-groups", Some(g), 201),
            "group_id",
        )
    };
    let (web, admin, spare_group) = (group("web"), group("admin"), group("spare"));
    agent.ok(
        "POST",
        &format!("/v1/security-groups/{web}/authorize-ingress"),
        Some(json!({"ip_permissions": [
            {"ip_protocol": "tcp", "from_port": 443, "to_port": 443, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]},
            {"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "user_id_group_pairs": [{"group_id": admin}]}]})),
        200,
    );
    let key = json!({"key_name": "ops", "public_key_material": KEY});
    let key_pair_id = id(
        &agent.ok("POST", "/v1/key-pairs", Some(key), 201),
        "key_pair_id",
    );
    let mut fx = Fixture {
        bundle_dir,
        manifest: manifest.clone(),
        image,
        spare_image,
        subnet,
        spare_subnet,
        web,
        admin,
        spare_group,
        key_pair_id,
        stopped: String::new(),
        stopped_ip: String::new(),
        terminated: String::new(),
    };
    // The VMM is /bin/true: it "boots" and powers off at once, so each
    // launch ends `stopped` without KVM.
    let mut launch = |client_token: &str| {
        let mut body = run_body(&fx);
        body["key_name"] = json!("ops");
        body["client_token"] = json!(client_token);
        let run = agent.ok("POST", "/v1/instances", Some(body), 201);
        let inst = &run["instances"][0];
        agent.bridges.push(id(inst, "tap"));
        let instance_id = id(inst, "instance_id");
        agent.wait_for_state(&instance_id, "stopped")
    };
    let stopped = launch(STOPPED_TOKEN);
    let terminated = id(&launch("fixture-terminated"), "instance_id");
    agent.ok(
        "POST",
        &format!("/v1/instances/{terminated}/terminate"),
        None,
        200,
    );
    agent.wait_for_state(&terminated, "terminated");
    fx.stopped = id(&stopped, "instance_id");
    fx.stopped_ip = id(&stopped, "private_ip");
    fx.terminated = terminated;
    fx
}

#[test]
fn every_route_refuses_bad_input_and_changes_nothing() {
    if !privileged() {
        return;
    }
    private_network_namespace();
    let mut agent = Agent::start_with_args("bad-input", &["--vmm", "/bin/true"]);
    let fx = set_up(&mut agent);
    let routes = documented_routes();
    let table = table(&fx);
    check_coverage(&routes, &table);
    let (auth, wrong_method) = (auth_cases(&routes, &fx), wrong_method_cases(&routes, &fx));
    let counts = (table.len(), auth.len(), wrong_method.len());
    let cases: Vec<Case> = [table, auth, wrong_method].concat();

    let started = Instant::now();
    let mut before = snapshot(&agent);
    let wrong_token = {
        let mut t = agent.token.clone();
        let last = if t.pop() == Some('x') { 'y' } else { 'x' };
        t.push(last);
        t
    };
    let mut failures = Vec::new();
    for case in &cases {
        let token = match case.token {
            Token::Right => Some(agent.token.as_str()),
            Token::Missing => None,
            Token::Wrong => Some(wrong_token.as_str()),
            Token::Truncated => Some(&agent.token[..agent.token.len() / 2]),
        };
        let (status, answer) = agent.raw(&case.method, &case.path, case.body.as_deref(), token);
        let what = format!(
            "[{}] {} {} {:?} token {:?}",
            case.route,
            case.method,
            case.path,
            case.body
                .as_deref()
                .map(|b| b.chars().take(200).collect::<String>()),
            case.token
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        if status != case.status || answer["error"]["code"] != case.code || message.is_empty() {
            failures.push(format!(
                "{what}\n  want {} {}, got {status} {answer}",
                case.status, case.code
            ));
        }
        let after = snapshot(&agent);
        if after != before {
            failures.push(format!(
                "{what}\n  changed state:\n{}",
                differences(&before, &after)
            ));
            // Judge the next calls against the state as it now is.
            before = after;
        }
    }
    let routes_hit: BTreeSet<&str> = cases.iter().map(|c| c.route.as_str()).collect();
    eprintln!(
        "{} bad calls ({} from the table, {} token, {} method) over {} routes ({} documented) in {:.1?}",
        cases.len(),
        counts.0,
        counts.1,
        counts.2,
        routes_hit.len(),
        routes.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} bad calls were mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
