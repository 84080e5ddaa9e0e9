//! What the metadata service serves ([`MetadataDocument`]) and how
//! ([`MetadataOptions`]), both given at launch as JSON and replaceable
//! while the guest runs, and checked before use ([`MetadataError`]).

use std::net::Ipv4Addr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::net::MacAddr;

/// Most bytes of user data, decoded: EC2's limit (16 KB raw, before
/// base64), so what launches here launches there.
pub const MAX_USER_DATA: usize = 16 * 1024;

/// Everything the instance metadata service tells the guest about itself.
///
/// Given as JSON (`snake_case` keys, unknown keys refused), for example:
///
/// ```json
/// {
///   "instance_id": "i-0123456789abcdef0",
///   "ami_id": "ami-0abcdef1234567890",
///   "instance_type": "m5.large",
///   "account_id": "123456789012",
///   "region": "us-east-1",
///   "availability_zone": "us-east-1a",
///   "local_ipv4": "10.0.0.5",
///   "local_hostname": "ip-10-0-0-5.ec2.internal",
///   "hostname": "ip-10-0-0-5.ec2.internal",
///   "mac": "02:00:0a:00:00:05",
///   "pending_time": "2024-05-01T12:00:00Z",
///   "security_groups": ["default"],
///   "public_keys": [{ "name": "my-key", "openssh_key": "ssh-ed25519 AAAA… my-key" }],
///   "interfaces": [{
///     "mac": "02:00:0a:00:00:05", "device_number": 0, "network_card": 0,
///     "interface_id": "eni-0123456789abcdef0", "local_ipv4s": ["10.0.0.5"],
///     "subnet_id": "subnet-0123456789abcdef0", "subnet_ipv4_cidr_block": "10.0.0.0/24",
///     "vpc_id": "vpc-0123456789abcdef0", "security_group_ids": ["sg-0123456789abcdef0"]
///   }],
///   "user_data": "I2Nsb3VkLWNvbmZpZwo=",
///   "identity": { "signature": "…", "rsa2048": "…", "pkcs7": "…" }
/// }
/// ```
///
/// `architecture` defaults to `x86_64`; `security_groups`, `public_keys`,
/// `interfaces`, `user_data` and `identity` may be left out (then the
/// paths that would serve them answer 404, or list nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataDocument {
    /// `meta-data/instance-id`, and what IMDSv2 tokens are bound to.
    pub instance_id: String,
    /// `meta-data/ami-id`; `imageId` of the identity document.
    pub ami_id: String,
    /// `meta-data/instance-type`.
    pub instance_type: String,
    /// `accountId` of the identity document.
    pub account_id: String,
    /// `architecture` of the identity document (`x86_64`, `arm64`).
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// `meta-data/placement/region`.
    pub region: String,
    /// `meta-data/placement/availability-zone`.
    pub availability_zone: String,
    /// `meta-data/local-ipv4`; `privateIp` of the identity document.
    pub local_ipv4: Ipv4Addr,
    /// `meta-data/local-hostname`.
    pub local_hostname: String,
    /// `meta-data/hostname`.
    pub hostname: String,
    /// `meta-data/mac`: the primary interface's.
    pub mac: MacAddr,
    /// `pendingTime` of the identity document (RFC 3339, `…Z`).
    pub pending_time: String,
    /// `meta-data/security-groups`: group names, one per line.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// `meta-data/public-keys/`: index `i` is `public-keys/i/openssh-key`.
    #[serde(default)]
    pub public_keys: Vec<PublicKey>,
    /// `meta-data/network/interfaces/macs/`.
    #[serde(default)]
    pub interfaces: Vec<NetworkInterface>,
    /// `user-data`, base64 (standard alphabet, padded) as EC2's
    /// `RunInstances` takes it; served decoded, byte for byte.
    #[serde(default)]
    pub user_data: Option<String>,
    /// The signatures of the identity document, computed elsewhere over
    /// [`MetadataDocument::identity_document`] and served verbatim.
    #[serde(default)]
    pub identity: IdentitySignatures,
}

fn default_architecture() -> String {
    "x86_64".to_string()
}

/// An SSH key the instance was launched with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    /// The key pair's name (`public-keys/` lists `0=<name>`).
    pub name: String,
    /// The key in OpenSSH format, served as given.
    pub openssh_key: String,
}

/// One network interface of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Its MAC: the directory name under `macs/`.
    pub mac: MacAddr,
    /// `device-number` (0 for the primary interface).
    pub device_number: u32,
    /// `network-card`.
    #[serde(default)]
    pub network_card: u32,
    /// `interface-id` (`eni-…`).
    pub interface_id: String,
    /// `local-ipv4s`, one per line.
    pub local_ipv4s: Vec<Ipv4Addr>,
    /// `subnet-id`.
    pub subnet_id: String,
    /// `subnet-ipv4-cidr-block` (`10.0.0.0/24`).
    pub subnet_ipv4_cidr_block: String,
    /// `vpc-id`.
    pub vpc_id: String,
    /// `security-group-ids`, one per line.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

/// The pre-computed signatures of the identity document
/// (`dynamic/instance-identity/…`); a missing one answers 404.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySignatures {
    /// `signature`: base64 of an RSA-SHA256 signature.
    #[serde(default)]
    pub signature: Option<String>,
    /// `rsa2048`: a PKCS#7 signature with an RSA-2048 key.
    #[serde(default)]
    pub rsa2048: Option<String>,
    /// `pkcs7`: a PKCS#7 signature.
    #[serde(default)]
    pub pkcs7: Option<String>,
}

impl From<crate::net::identity::Signatures> for IdentitySignatures {
    /// What [`crate::net::identity::IdentitySigner::sign`] made of
    /// [`MetadataDocument::identity_document`], all three served.
    fn from(sigs: crate::net::identity::Signatures) -> Self {
        Self {
            signature: Some(sigs.signature),
            rsa2048: Some(sigs.rsa2048),
            pkcs7: Some(sigs.pkcs7),
        }
    }
}

/// Whether GET and HEAD need an IMDSv2 session token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv1 works; a token, when given, must be valid.
    #[default]
    Optional,
    /// Every GET and HEAD needs a valid token.
    Required,
}

/// Whether the service answers at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpEndpoint {
    /// It answers.
    #[default]
    Enabled,
    /// Every request gets 403.
    Disabled,
}

/// EC2's instance metadata options (`ModifyInstanceMetadataOptions`).
///
/// JSON: `{"http_tokens": "required", "http_endpoint": "enabled",
/// "hop_limit": 1}`, every key optional (those are the defaults, but for
/// `http_tokens`, whose default is `optional`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataOptions {
    /// `HttpTokens`.
    #[serde(default)]
    pub http_tokens: HttpTokens,
    /// `HttpEndpoint`.
    #[serde(default)]
    pub http_endpoint: HttpEndpoint,
    /// `HttpPutResponseHopLimit`, 1–64: the IP TTL (IPv6 hop limit) of
    /// every TCP segment the service sends.
    #[serde(default = "default_hop_limit")]
    pub hop_limit: u8,
}

fn default_hop_limit() -> u8 {
    1
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            http_tokens: HttpTokens::default(),
            http_endpoint: HttpEndpoint::default(),
            hop_limit: default_hop_limit(),
        }
    }
}

/// Why the metadata service cannot be made or changed as asked.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The hop limit is outside 1–64.
    #[error("hop limit {0} is outside 1-64")]
    HopLimit(u8),
    /// A value that must not be empty is.
    #[error("metadata field {0} is empty")]
    Empty(&'static str),
    /// A value holds a character that would break the line-per-entry
    /// listings (a control character, or `/`, `=` in a name).
    #[error(
        "metadata field {0} holds a character it may not (control character, or / and = in a name)"
    )]
    BadCharacter(&'static str),
    /// Two interfaces have the same MAC.
    #[error("two network interfaces have the MAC {0}")]
    DuplicateInterface(MacAddr),
    /// `user_data` is not base64.
    #[error("user_data is not base64 (standard alphabet, padded): {0}")]
    UserDataBase64(base64::DecodeError),
    /// `user_data` decodes to more than [`MAX_USER_DATA`] bytes.
    #[error("user_data is {0} bytes decoded, more than EC2's {MAX_USER_DATA}")]
    UserDataTooLarge(usize),
    /// The guest's MAC is not a unicast address.
    #[error("guest MAC {0} is not a unicast address")]
    GuestMac(MacAddr),
    /// The JSON does not describe a document or options.
    #[error("metadata JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// No random bytes for the token key.
    #[error("reading random bytes for the IMDSv2 token key: {0}")]
    Entropy(#[source] std::io::Error),
}

impl MetadataOptions {
    /// Parses options from JSON and checks them.
    pub fn from_json(json: &str) -> Result<Self, MetadataError> {
        let options: Self = serde_json::from_str(json)?;
        options.validate()?;
        Ok(options)
    }

    /// Checks the hop limit.
    pub fn validate(&self) -> Result<(), MetadataError> {
        if (1..=64).contains(&self.hop_limit) {
            Ok(())
        } else {
            Err(MetadataError::HopLimit(self.hop_limit))
        }
    }
}

/// `value` as one line of a listing: not empty, no control characters.
fn line(field: &'static str, value: &str) -> Result<(), MetadataError> {
    if value.is_empty() {
        return Err(MetadataError::Empty(field));
    }
    if value.chars().any(char::is_control) {
        return Err(MetadataError::BadCharacter(field));
    }
    Ok(())
}

/// `value` as a path segment or `i=name` entry: a line without `/`, `=`.
fn name(field: &'static str, value: &str) -> Result<(), MetadataError> {
    line(field, value)?;
    if value.contains(['/', '=']) {
        return Err(MetadataError::BadCharacter(field));
    }
    Ok(())
}

/// Served as given, so anything but NUL goes (keys and PEM bodies end
/// lines).
fn text(field: &'static str, value: &str) -> Result<(), MetadataError> {
    if value.is_empty() {
        return Err(MetadataError::Empty(field));
    }
    if value.contains('\0') {
        return Err(MetadataError::BadCharacter(field));
    }
    Ok(())
}

impl MetadataDocument {
    /// Parses a document from JSON and checks it.
    pub fn from_json(json: &str) -> Result<Self, MetadataError> {
        let doc: Self = serde_json::from_str(json)?;
        doc.validate()?;
        Ok(doc)
    }

    /// Checks every field (see [`MetadataError`]).
    pub fn validate(&self) -> Result<(), MetadataError> {
        self.decoded_user_data().map(|_| ())?;
        name("instance_id", &self.instance_id)?;
        line("ami_id", &self.ami_id)?;
        line("instance_type", &self.instance_type)?;
        line("account_id", &self.account_id)?;
        line("architecture", &self.architecture)?;
        line("region", &self.region)?;
        line("availability_zone", &self.availability_zone)?;
        line("local_hostname", &self.local_hostname)?;
        line("hostname", &self.hostname)?;
        line("pending_time", &self.pending_time)?;
        for group in &self.security_groups {
            line("security_groups", group)?;
        }
        for key in &self.public_keys {
            name("public_keys.name", &key.name)?;
            text("public_keys.openssh_key", &key.openssh_key)?;
        }
        for (i, nic) in self.interfaces.iter().enumerate() {
            if self.interfaces[..i]
                .iter()
                .any(|other| other.mac == nic.mac)
            {
                return Err(MetadataError::DuplicateInterface(nic.mac));
            }
            line("interfaces.interface_id", &nic.interface_id)?;
            line("interfaces.subnet_id", &nic.subnet_id)?;
            line(
                "interfaces.subnet_ipv4_cidr_block",
                &nic.subnet_ipv4_cidr_block,
            )?;
            line("interfaces.vpc_id", &nic.vpc_id)?;
            for id in &nic.security_group_ids {
                line("interfaces.security_group_ids", id)?;
            }
        }
        let sigs = &self.identity;
        for (field, sig) in [
            ("identity.signature", &sigs.signature),
            ("identity.rsa2048", &sigs.rsa2048),
            ("identity.pkcs7", &sigs.pkcs7),
        ] {
            if let Some(sig) = sig {
                text(field, sig)?;
            }
        }
        Ok(())
    }

    /// The user data as served: `user_data` decoded (`None` when absent).
    pub fn decoded_user_data(&self) -> Result<Option<Vec<u8>>, MetadataError> {
        let Some(encoded) = &self.user_data else {
            return Ok(None);
        };
        // Base64 is 4 characters per 3 bytes: refuse before decoding.
        if encoded.len() / 4 * 3 > MAX_USER_DATA + 3 {
            return Err(MetadataError::UserDataTooLarge(encoded.len() / 4 * 3));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(MetadataError::UserDataBase64)?;
        if bytes.len() > MAX_USER_DATA {
            return Err(MetadataError::UserDataTooLarge(bytes.len()));
        }
        Ok(Some(bytes))
    }

    /// The instance identity document exactly as
    /// `dynamic/instance-identity/document` serves it (EC2's layout: keys
    /// in EC2's order, two-space indent, `" : "`, no final newline). Sign
    /// these bytes for [`IdentitySignatures`].
    pub fn identity_document(&self) -> String {
        let quoted = |s: &str| serde_json::Value::from(s).to_string();
        let fields: [(&str, String); 15] = [
            ("accountId", quoted(&self.account_id)),
            ("architecture", quoted(&self.architecture)),
            ("availabilityZone", quoted(&self.availability_zone)),
            ("billingProducts", "null".into()),
            ("devpayProductCodes", "null".into()),
            ("marketplaceProductCodes", "null".into()),
            ("imageId", quoted(&self.ami_id)),
            ("instanceId", quoted(&self.instance_id)),
            ("instanceType", quoted(&self.instance_type)),
            ("kernelId", "null".into()),
            ("pendingTime", quoted(&self.pending_time)),
            ("privateIp", quoted(&self.local_ipv4.to_string())),
            ("ramdiskId", "null".into()),
            ("region", quoted(&self.region)),
            ("version", quoted("2017-09-30")),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(key, value)| format!("  \"{key}\" : {value}"))
            .collect();
        format!("{{\n{}\n}}", body.join(",\n"))
    }
}
