//! What a NIC's datapath gets beyond the source check and DHCP, loaded
//! from the files `--net` names:
//!
//! - `sg=FILE`: the NIC's security groups (`SecurityGroupsConfig` JSON,
//!   see `stratus_devices::net::filter`); without it the NIC is not
//!   filtered (a debugging run; the agent always gives one).
//! - `metadata=FILE`: the instance metadata service, a [`MetadataFile`];
//!   without it frames to 169.254.169.254 are dropped.
//! - `flow-log=FILE`: flow-log aggregation, a [`FlowLogFile`].
//!
//! Each file is read and checked before any VM object exists (a bad one
//! is a configuration error, exit code 2) and again when the NIC is built.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stratus_devices::net::filter::{Firewall, SecurityGroupsConfig};
use stratus_devices::net::flow_log::{FlowLog, FlowLogConfig};
use stratus_devices::net::identity::IdentitySigner;
use stratus_devices::net::metadata::{
    GuestAddrs, MetadataDocument, MetadataOptions, MetadataService,
};
use stratus_devices::net::Datapath;

use crate::config::NetConfig;

/// The `metadata=FILE` document: what the service serves, how, and the
/// key that signs the instance-identity document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFile {
    /// Everything the service serves.
    pub document: MetadataDocument,
    /// `http_tokens`, `http_endpoint`, `hop_limit`.
    #[serde(default)]
    pub options: MetadataOptions,
    /// PEM RSA private key (PKCS#8 or PKCS#1) signing the identity
    /// document; without it the signature paths serve nothing.
    #[serde(default)]
    pub identity_key: Option<PathBuf>,
    /// PEM certificate of that key (what a guest verifies against).
    #[serde(default)]
    pub identity_certificate: Option<PathBuf>,
}

/// The body of `PUT /metadata`: a new document and, optionally, new
/// options (the signing key stays the one given at launch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataUpdate {
    /// Everything the service serves.
    pub document: MetadataDocument,
    /// New options; the current ones stay when absent.
    #[serde(default)]
    pub options: Option<MetadataOptions>,
}

/// The `flow-log=FILE` document: where records go, and the flow log's
/// settings (`account_id`, `interface_id`, `aggregation_interval_secs`
/// 60 or 600, `max_flows`, `max_records_per_interval`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowLogFile {
    /// A file (appended to) or a FIFO the records are written to.
    pub destination: PathBuf,
    /// The flow log's settings.
    pub log: FlowLogConfig,
}

/// A NIC's services, built.
#[derive(Debug, Default)]
pub struct NicServices {
    /// Security groups.
    pub firewall: Option<Firewall>,
    /// The metadata service.
    pub metadata: Option<MetadataService>,
    /// What signs identity documents, kept for `PUT /metadata`.
    pub signer: Option<Arc<IdentitySigner>>,
    /// The flow log and its destination.
    pub flow_log: Option<(FlowLog, File)>,
}

fn read(what: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Signs `doc`'s identity document with `signer`, in place.
pub fn sign_document(doc: &mut MetadataDocument, signer: &IdentitySigner) -> Result<(), String> {
    let sigs = signer
        .sign(doc.identity_document().as_bytes())
        .map_err(|e| format!("signing the identity document: {e}"))?;
    doc.identity = sigs.into();
    Ok(())
}

impl NicServices {
    /// Reads and builds what `net` names.
    pub fn load(net: &NetConfig) -> Result<Self, String> {
        let mut services = NicServices::default();
        if let Some(path) = &net.security_groups {
            let text = read("security groups", path)?;
            let config: SecurityGroupsConfig = serde_json::from_str(&text)
                .map_err(|e| format!("security groups {}: {e}", path.display()))?;
            let firewall = Firewall::new(&config)
                .map_err(|e| format!("security groups {}: {e}", path.display()))?;
            services.firewall = Some(firewall);
        }
        if let Some(path) = &net.metadata {
            let text = read("metadata", path)?;
            let mut file: MetadataFile = serde_json::from_str(&text)
                .map_err(|e| format!("metadata {}: {e}", path.display()))?;
            let signer = match (&file.identity_key, &file.identity_certificate) {
                (Some(key), Some(cert)) => {
                    let signer = IdentitySigner::from_pem(
                        &read("identity key", key)?,
                        &read("identity certificate", cert)?,
                    )
                    .map_err(|e| format!("metadata {}: identity key: {e}", path.display()))?;
                    Some(Arc::new(signer))
                }
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "metadata {}: identity_key and identity_certificate go together",
                        path.display()
                    ))
                }
            };
            if let Some(signer) = &signer {
                sign_document(&mut file.document, signer)?;
            }
            let guest = GuestAddrs {
                mac: net.mac,
                ipv4: net.ip.addr,
                ipv6: net.ipv6,
            };
            let service = MetadataService::new(file.document, file.options, guest)
                .map_err(|e| format!("metadata {}: {e}", path.display()))?;
            services.metadata = Some(service);
            services.signer = signer;
        }
        if let Some(path) = &net.flow_log {
            let text = read("flow log", path)?;
            let file: FlowLogFile = serde_json::from_str(&text)
                .map_err(|e| format!("flow log {}: {e}", path.display()))?;
            let log =
                FlowLog::new(file.log).map_err(|e| format!("flow log {}: {e}", path.display()))?;
            // Non-blocking, so a FIFO nobody reads never stalls the NIC:
            // records that cannot be written are counted and dropped.
            let out = OpenOptions::new()
                .append(true)
                .create(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&file.destination)
                .map_err(|e| format!("flow log destination {}: {e}", file.destination.display()))?;
            services.flow_log = Some((log, out));
        }
        Ok(services)
    }

    /// Hands everything to `datapath`.
    pub fn install(self, datapath: &mut Datapath) {
        datapath.set_firewall(self.firewall);
        datapath.set_metadata(self.metadata);
        if let Some((log, out)) = self.flow_log {
            datapath.set_flow_log(log, out);
        }
    }
}
