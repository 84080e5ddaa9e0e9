//! An instance's security groups as its VMM takes them: the document of
//! `--net …,sg=FILE` and `PUT /network-interfaces/{id}/security-groups`,
//! with every group reference resolved to the private addresses of the
//! instances in that group. Built with the VMM's own types and checked
//! with its own validation, so what the agent sends the VMM accepts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use stratus_devices::net::filter::{self as vmm, SecurityGroupsConfig};

use super::security_group::{RuleEntry, SecurityGroup, Source};

fn rule(e: &RuleEntry) -> vmm::Rule {
    let (cidrs, source_groups) = match &e.source {
        Source::Cidr(c) => (vec![c.clone()], Vec::new()),
        Source::Group(g) => (Vec::new(), vec![g.clone()]),
    };
    vmm::Rule {
        protocol: e.ip_protocol.clone(),
        from_port: e.from_port,
        to_port: e.to_port,
        cidrs,
        source_groups,
    }
}

/// The document for a NIC in `groups`; `members[g]` are the private
/// addresses of the instances in group `g` (every group a rule names
/// must have an entry, empty if it has no instance).
pub fn document(
    groups: &[SecurityGroup],
    members: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> Result<SecurityGroupsConfig, String> {
    let mut config = SecurityGroupsConfig {
        groups: groups
            .iter()
            .map(|g| vmm::SecurityGroup {
                id: g.group_id.clone(),
                ingress: g.ingress.iter().map(rule).collect(),
                egress: g.egress.iter().map(rule).collect(),
            })
            .collect(),
        ..SecurityGroupsConfig::default()
    };
    for g in groups.iter().flat_map(|g| g.referenced_groups()) {
        let addresses = members
            .get(g)
            .ok_or_else(|| format!("no members given for referenced group {g}"))?;
        config.address_sets.insert(
            g.to_string(),
            addresses.iter().map(Ipv4Addr::to_string).collect(),
        );
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::security_group::IpPermission;

    fn group(id: &str, ingress: &str) -> SecurityGroup {
        let perms: Vec<IpPermission> = serde_json::from_str(ingress).unwrap();
        SecurityGroup {
            group_id: id.into(),
            group_name: id.into(),
            description: "d".into(),
            ingress: perms.iter().flat_map(|p| p.entries().unwrap()).collect(),
            egress: SecurityGroup::default_egress(),
            created_at: String::new(),
        }
    }

    #[test]
    fn groups_become_the_vmms_document_with_references_resolved() {
        let web = group(
            "sg-0000000a",
            r#"[{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "user_id_group_pairs": [{"group_id": "sg-0000000b"}]},
                {"ip_protocol": "icmp", "from_port": 8, "to_port": -1, "ip_ranges": [{"cidr_ip": "10.0.0.0/16"}]}]"#,
        );
        let members =
            BTreeMap::from([("sg-0000000b".to_string(), vec![Ipv4Addr::new(10, 0, 0, 7)])]);
        let doc = document(std::slice::from_ref(&web), &members).unwrap();
        assert_eq!(doc.groups.len(), 1);
        assert_eq!(doc.groups[0].ingress.len(), 2);
        assert_eq!(
            doc.address_sets["sg-0000000b"],
            vec!["10.0.0.7".to_string()]
        );
        let text = serde_json::to_string(&doc).unwrap();
        let back: SecurityGroupsConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
        assert!(document(&[web], &BTreeMap::new()).is_err());
    }
}
