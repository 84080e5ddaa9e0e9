//! The instance types the host offers: EC2's names and sizes.

/// One type: vCPUs and memory (MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u32,
}

const fn t(name: &'static str, vcpus: u32, memory_mib: u32) -> InstanceType {
    InstanceType {
        name,
        vcpus,
        memory_mib,
    }
}

/// The catalog (EC2's sizes for these names).
pub const CATALOG: &[InstanceType] = &[
    t("t2.nano", 1, 512),
    t("t2.micro", 1, 1024),
    t("t2.small", 1, 2048),
    t("t3.nano", 2, 512),
    t("t3.micro", 2, 1024),
    t("t3.small", 2, 2048),
    t("t3.medium", 2, 4096),
    t("t3.large", 2, 8192),
    t("t3.xlarge", 4, 16384),
    t("m5.large", 2, 8192),
    t("m5.xlarge", 4, 16384),
    t("m5.2xlarge", 8, 32768),
    t("c5.large", 2, 4096),
    t("c5.xlarge", 4, 8192),
];

/// The type named `name`.
pub fn lookup(name: &str) -> Option<InstanceType> {
    CATALOG.iter().copied().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog() {
        assert_eq!(
            lookup("t3.nano").map(|t| (t.vcpus, t.memory_mib)),
            Some((2, 512))
        );
        assert_eq!(lookup("m5.large").map(|t| t.memory_mib), Some(8192));
        assert_eq!(lookup("t2.nano").map(|t| t.vcpus), Some(1));
        assert!(lookup("x9.huge").is_none());
    }
}
