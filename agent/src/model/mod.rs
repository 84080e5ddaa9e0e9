//! The agent's resources and the rules they obey, free of storage and
//! HTTP: what EC2 accepts and refuses, in one place.

pub mod cidr;
pub mod ids;
pub mod image;
pub mod instance;
pub mod instance_groups;
pub mod instance_type;
pub mod key_pair;
pub mod lease;
pub mod nic_rules;
pub mod security_group;
pub mod subnet;
