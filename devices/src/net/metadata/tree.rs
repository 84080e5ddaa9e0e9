//! The document rendered once into every body the service can send, keyed
//! by path: a request looks its path up and shares the bytes (an `Arc`),
//! so answering copies and allocates nothing, however large the body, and
//! replacing the document leaves responses being sent intact.

use std::collections::HashMap;
use std::sync::Arc;

use super::document::{MetadataDocument, MetadataError};

/// Versions `/` lists, oldest first, as EC2 does; each serves the same
/// tree here.
pub(crate) const VERSIONS: [&str; 28] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "latest",
];

/// A rendered document: bodies by path below a version, without leading
/// or trailing slash (`""` is the version's own listing).
#[derive(Debug)]
pub(crate) struct Tree {
    /// The body of `/`.
    root: Arc<[u8]>,
    /// Bodies below `/<version>/`.
    paths: HashMap<String, Arc<[u8]>>,
    /// What tokens are bound to.
    pub instance_id: String,
}

/// Lines joined by `\n`, no final newline: EC2's listings.
fn listing<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> String {
    let mut out = String::new();
    for entry in entries {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(entry.as_ref());
    }
    out
}

impl Tree {
    /// Renders `doc`, which is validated first.
    pub(crate) fn render(doc: &MetadataDocument) -> Result<Self, MetadataError> {
        doc.validate()?;
        let mut paths: HashMap<String, Arc<[u8]>> = HashMap::new();
        let mut put = |path: String, body: Vec<u8>| {
            paths.insert(path, Arc::from(body));
        };
        let user_data = doc.decoded_user_data()?;

        // EC2 lists these three without trailing slashes.
        let mut top = vec!["dynamic", "meta-data"];
        if user_data.is_some() {
            top.push("user-data");
        }
        put(String::new(), listing(top).into_bytes());
        if let Some(bytes) = user_data {
            put("user-data".into(), bytes);
        }

        let m = |leaf: &str| format!("meta-data/{leaf}");
        let mut meta = vec![
            "ami-id",
            "hostname",
            "instance-id",
            "instance-type",
            "local-hostname",
            "local-ipv4",
            "mac",
            "network/",
            "placement/",
        ];
        if !doc.public_keys.is_empty() {
            meta.push("public-keys/");
        }
        meta.push("security-groups");
        put("meta-data".into(), listing(meta).into_bytes());
        for (leaf, value) in [
            ("ami-id", doc.ami_id.clone()),
            ("hostname", doc.hostname.clone()),
            ("instance-id", doc.instance_id.clone()),
            ("instance-type", doc.instance_type.clone()),
            ("local-hostname", doc.local_hostname.clone()),
            ("local-ipv4", doc.local_ipv4.to_string()),
            ("mac", doc.mac.to_string()),
            ("placement", listing(["availability-zone", "region"])),
            ("placement/availability-zone", doc.availability_zone.clone()),
            ("placement/region", doc.region.clone()),
            ("security-groups", listing(&doc.security_groups)),
            ("network", "interfaces/".into()),
            ("network/interfaces", "macs/".into()),
            (
                "network/interfaces/macs",
                listing(doc.interfaces.iter().map(|nic| format!("{}/", nic.mac))),
            ),
        ] {
            put(m(leaf), value.into_bytes());
        }
        if !doc.public_keys.is_empty() {
            let keys = doc
                .public_keys
                .iter()
                .enumerate()
                .map(|(i, key)| format!("{i}={}", key.name));
            put(m("public-keys"), listing(keys).into_bytes());
            for (i, key) in doc.public_keys.iter().enumerate() {
                put(m(&format!("public-keys/{i}")), b"openssh-key".to_vec());
                put(
                    m(&format!("public-keys/{i}/openssh-key")),
                    key.openssh_key.clone().into_bytes(),
                );
            }
        }
        for nic in &doc.interfaces {
            let dir = format!("meta-data/network/interfaces/macs/{}", nic.mac);
            let leaves = [
                ("device-number", nic.device_number.to_string()),
                ("interface-id", nic.interface_id.clone()),
                (
                    "local-ipv4s",
                    listing(nic.local_ipv4s.iter().map(|ip| ip.to_string())),
                ),
                ("mac", nic.mac.to_string()),
                ("network-card", nic.network_card.to_string()),
                ("security-group-ids", listing(&nic.security_group_ids)),
                ("subnet-id", nic.subnet_id.clone()),
                ("subnet-ipv4-cidr-block", nic.subnet_ipv4_cidr_block.clone()),
                ("vpc-id", nic.vpc_id.clone()),
            ];
            put(
                dir.clone(),
                listing(leaves.iter().map(|(leaf, _)| *leaf)).into_bytes(),
            );
            for (leaf, value) in leaves {
                put(format!("{dir}/{leaf}"), value.into_bytes());
            }
        }

        put("dynamic".into(), b"instance-identity/".to_vec());
        let sigs = &doc.identity;
        let mut identity = vec!["document"];
        for (leaf, sig) in [
            ("pkcs7", &sigs.pkcs7),
            ("rsa2048", &sigs.rsa2048),
            ("signature", &sigs.signature),
        ] {
            if let Some(sig) = sig {
                identity.push(leaf);
                put(
                    format!("dynamic/instance-identity/{leaf}"),
                    sig.clone().into_bytes(),
                );
            }
        }
        put(
            "dynamic/instance-identity".into(),
            listing(identity).into_bytes(),
        );
        put(
            "dynamic/instance-identity/document".into(),
            doc.identity_document().into_bytes(),
        );

        Ok(Self {
            root: Arc::from(listing(VERSIONS).into_bytes()),
            paths,
            instance_id: doc.instance_id.clone(),
        })
    }

    /// The body at `path` (query already cut), if there is one. A
    /// directory answers with or without its trailing slash, and so does
    /// a leaf.
    pub(crate) fn lookup(&self, path: &str) -> Option<&Arc<[u8]>> {
        let path = path.strip_prefix('/')?;
        if path.is_empty() {
            return Some(&self.root);
        }
        let (version, rest) = path.split_once('/').unwrap_or((path, ""));
        if !VERSIONS.contains(&version) {
            return None;
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        self.paths.get(rest)
    }
}
