//! The API's documents as tables for people (`--output table`).
//!
//! Read as loose JSON rather than the agent's own types: a field the
//! client does not know yet, or one an older agent lacks, shows as `-`
//! instead of failing the command, so the client and the agent can be
//! upgraded one after the other.

use serde_json::Value;

use super::table::Table;

mod health;

pub use health::health;

/// A field as a cell: strings as they are, lists comma-joined, `null` and
/// missing fields empty (shown `-`).
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn field(v: &Value, key: &str) -> String {
    text(&v[key])
}

/// The list under `key` of a list document (`{"images": [...]}`).
fn items<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key].as_array().map_or(&[], Vec::as_slice)
}

fn image_table(images: &[Value]) -> Table {
    let mut t = Table::new(&[
        "IMAGE ID",
        "NAME",
        "ARCHITECTURE",
        "BOOT MODE",
        "FORMAT",
        "STATE",
        "CREATED",
    ]);
    for i in images {
        t.row(
            [
                "image_id",
                "name",
                "architecture",
                "boot_mode",
                "root_device_format",
                "state",
                "created_at",
            ]
            .map(|k| field(i, k)),
        );
    }
    t
}

pub fn images(doc: &Value) -> String {
    image_table(items(doc, "images")).render()
}

pub fn image(doc: &Value) -> String {
    image_table(std::slice::from_ref(doc)).render()
}

fn subnet_table(subnets: &[Value]) -> Table {
    let mut t = Table::new(&[
        "SUBNET ID",
        "CIDR",
        "GATEWAY",
        "BRIDGE",
        "FREE IPS",
        "STATE",
        "CREATED",
    ]);
    for s in subnets {
        t.row(
            [
                "subnet_id",
                "cidr_block",
                "gateway",
                "bridge",
                "available_ip_address_count",
                "state",
                "created_at",
            ]
            .map(|k| field(s, k)),
        );
    }
    t
}

pub fn subnets(doc: &Value) -> String {
    subnet_table(items(doc, "subnets")).render()
}

pub fn subnet(doc: &Value) -> String {
    subnet_table(std::slice::from_ref(doc)).render()
}

fn key_pair_table(pairs: &[Value]) -> Table {
    let mut t = Table::new(&["KEY NAME", "KEY PAIR ID", "TYPE", "FINGERPRINT", "CREATED"]);
    for p in pairs {
        t.row(
            [
                "key_name",
                "key_pair_id",
                "key_type",
                "key_fingerprint",
                "created_at",
            ]
            .map(|k| field(p, k)),
        );
    }
    t
}

pub fn key_pairs(doc: &Value) -> String {
    key_pair_table(items(doc, "key_pairs")).render()
}

pub fn key_pair(doc: &Value) -> String {
    key_pair_table(std::slice::from_ref(doc)).render()
}

/// How many rules (one per source, as EC2 counts them) a list of
/// permissions holds.
fn rule_count(permissions: &Value) -> usize {
    permissions.as_array().map_or(0, |ps| {
        ps.iter()
            .map(|p| {
                ["ip_ranges", "ipv6_ranges", "user_id_group_pairs"]
                    .iter()
                    .map(|k| p[*k].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
            })
            .sum()
    })
}

fn group_table(groups: &[Value]) -> Table {
    let mut t = Table::new(&[
        "GROUP ID",
        "NAME",
        "DESCRIPTION",
        "INGRESS RULES",
        "EGRESS RULES",
        "CREATED",
    ]);
    for g in groups {
        t.row([
            field(g, "group_id"),
            field(g, "group_name"),
            field(g, "description"),
            rule_count(&g["ip_permissions"]).to_string(),
            rule_count(&g["ip_permissions_egress"]).to_string(),
            field(g, "created_at"),
        ]);
    }
    t
}

pub fn security_groups(doc: &Value) -> String {
    group_table(items(doc, "security_groups")).render()
}

/// One group, then its rules one per line.
pub fn security_group(doc: &Value) -> String {
    let mut rules = Table::new(&["DIRECTION", "PROTOCOL", "PORTS", "PEER"]);
    for (direction, key) in [
        ("ingress", "ip_permissions"),
        ("egress", "ip_permissions_egress"),
    ] {
        for p in items(doc, key) {
            let protocol = match field(p, "ip_protocol").as_str() {
                "-1" => "all".to_string(),
                other => other.to_string(),
            };
            let ports = ports(p);
            let peers = items(p, "ip_ranges")
                .iter()
                .map(|r| field(r, "cidr_ip"))
                .chain(
                    items(p, "ipv6_ranges")
                        .iter()
                        .map(|r| field(r, "cidr_ipv6")),
                )
                .chain(
                    items(p, "user_id_group_pairs")
                        .iter()
                        .map(|g| field(g, "group_id")),
                );
            for peer in peers {
                rules.row([direction, &protocol, &ports, &peer]);
            }
        }
    }
    format!(
        "{}\n{}",
        group_table(std::slice::from_ref(doc)).render(),
        rules.render()
    )
}

/// A permission's ports as people write them: `80`, `8000-8080`, `all`,
/// or for ICMP `type 8 code 0`.
fn ports(p: &Value) -> String {
    let (from, to) = (p["from_port"].as_i64(), p["to_port"].as_i64());
    match (field(p, "ip_protocol").as_str(), from, to) {
        ("tcp" | "udp" | "6" | "17", Some(f), Some(t)) if f == t => f.to_string(),
        ("tcp" | "udp" | "6" | "17", Some(f), Some(t)) => format!("{f}-{t}"),
        ("icmp" | "icmpv6" | "1" | "58", Some(ty), code) if ty >= 0 => match code {
            Some(c) if c >= 0 => format!("type {ty} code {c}"),
            _ => format!("type {ty}"),
        },
        _ => "all".into(),
    }
}

fn instance_table(instances: &[Value]) -> Table {
    let mut t = Table::new(&[
        "INSTANCE ID",
        "NAME",
        "STATE",
        "TYPE",
        "PRIVATE IP",
        "SUBNET ID",
        "IMAGE ID",
        "SECURITY GROUPS",
        "LAUNCHED",
    ]);
    for i in instances {
        t.row([
            field(i, "instance_id"),
            text(&i["tags"]["Name"]),
            field(i, "state"),
            field(i, "instance_type"),
            field(i, "private_ip"),
            field(i, "subnet_id"),
            field(i, "image_id"),
            field(i, "security_group_ids"),
            field(i, "launch_time"),
        ]);
    }
    t
}

pub fn instances(doc: &Value) -> String {
    instance_table(items(doc, "instances")).render()
}

/// One instance as a row (what stop, start and a change of groups
/// answer).
pub fn instance_row(doc: &Value) -> String {
    instance_table(std::slice::from_ref(doc)).render()
}

/// One instance with everything it has, one field per line.
pub fn instance(doc: &Value) -> String {
    let pairs = |v: &Value, sep: &str| {
        v.as_object().map_or(String::new(), |m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(sep)
        })
    };
    let size = format!(
        "{} ({} vCPUs, {} MiB)",
        field(doc, "instance_type"),
        field(doc, "vcpus"),
        field(doc, "memory_mib")
    );
    let mut t = Table::plain();
    for (name, value) in [
        ("instance id", field(doc, "instance_id")),
        ("state", field(doc, "state")),
        ("state reason", field(doc, "state_reason")),
        ("instance type", size),
        ("image id", field(doc, "image_id")),
        ("subnet id", field(doc, "subnet_id")),
        ("private ip", field(doc, "private_ip")),
        ("mac", field(doc, "mac")),
        ("security groups", field(doc, "security_group_ids")),
        ("key name", field(doc, "key_name")),
        ("tags", pairs(&doc["tags"], ", ")),
        ("metadata options", pairs(&doc["metadata_options"], " ")),
        ("launch time", field(doc, "launch_time")),
        ("client token", field(doc, "client_token")),
        ("tap", field(doc, "tap")),
        ("generation", field(doc, "generation")),
    ] {
        t.row([name.to_string(), value]);
    }
    t.render()
}

pub fn terminated(doc: &Value) -> String {
    let mut t = Table::new(&["INSTANCE ID", "PREVIOUS STATE", "CURRENT STATE"]);
    t.row([
        field(doc, "instance_id"),
        text(&doc["previous_state"]["name"]),
        text(&doc["current_state"]["name"]),
    ]);
    t.render()
}

/// The console text exactly as the agent read it.
pub fn console(doc: &Value) -> String {
    field(doc, "output")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_have_a_header_and_a_row_per_item() {
        let doc = json!({"subnets": [
            {"subnet_id": "subnet-1", "cidr_block": "10.0.0.0/24", "gateway": "10.0.0.1",
             "bridge": "stbr1", "available_ip_address_count": 251, "state": "available",
             "created_at": "2025-01-01T00:00:00Z"},
            {"subnet_id": "subnet-22", "cidr_block": "10.1.0.0/28", "state": "pending"}]});
        let out = subnets(&doc);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("SUBNET ID  CIDR"), "{out}");
        assert!(lines[1].contains("251"), "{out}");
        assert!(lines[2].starts_with("subnet-22  10.1.0.0/28  -"), "{out}");
        assert_eq!(images(&json!({"images": []})), image_table(&[]).render());
    }

    #[test]
    fn a_group_shows_one_rule_per_peer() {
        let g = json!({"group_id": "sg-1", "group_name": "web", "description": "d",
            "ip_permissions": [
                {"ip_protocol": "tcp", "from_port": 80, "to_port": 80,
                 "ip_ranges": [{"cidr_ip": "10.0.0.0/8"}],
                 "user_id_group_pairs": [{"group_id": "sg-2"}]},
                {"ip_protocol": "icmp", "from_port": 8, "to_port": -1,
                 "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}],
            "ip_permissions_egress": [
                {"ip_protocol": "-1", "ipv6_ranges": [{"cidr_ipv6": "::/0"}]}]});
        let out = security_group(&g);
        assert!(
            out.contains("sg-1      web   d            3              1"),
            "{out}"
        );
        assert!(
            out.contains("ingress    tcp       80      10.0.0.0/8"),
            "{out}"
        );
        assert!(out.contains("ingress    tcp       80      sg-2"), "{out}");
        assert!(
            out.contains("ingress    icmp      type 8  0.0.0.0/0"),
            "{out}"
        );
        assert!(out.contains("egress     all       all     ::/0"), "{out}");
    }

    #[test]
    fn ports_as_people_write_them() {
        let p = |v: Value| ports(&v);
        assert_eq!(
            p(json!({"ip_protocol": "udp", "from_port": 53, "to_port": 53})),
            "53"
        );
        assert_eq!(
            p(json!({"ip_protocol": "tcp", "from_port": 1, "to_port": 9})),
            "1-9"
        );
        assert_eq!(
            p(json!({"ip_protocol": "icmp", "from_port": -1, "to_port": -1})),
            "all"
        );
        assert_eq!(
            p(json!({"ip_protocol": "icmp", "from_port": 3, "to_port": 4})),
            "type 3 code 4"
        );
        assert_eq!(p(json!({"ip_protocol": "47"})), "all");
    }
}
