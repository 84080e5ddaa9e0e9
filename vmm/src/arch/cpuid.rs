//! CPUID for each vCPU: what KVM supports, with the topology rewritten so
//! that every vCPU sees its own APIC id and all of them agree on one socket
//! with N single-threaded cores.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// CPU vendor, which decides which topology leaves the guest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD" (and Hygon, which follows AMD's leaves).
    Amd,
    /// Anything else: only the common leaves are adjusted.
    Other,
}

/// Reads the vendor string from leaf 0.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    id[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The LAPIC timer has a TSC-deadline mode. KVM emulates it but leaves the
/// bit out of KVM_GET_SUPPORTED_CPUID (it is KVM_CAP_TSC_DEADLINE_TIMER):
/// a guest that does not see it calibrates the LAPIC timer against another
/// clock at boot, a wait of about 100 ms of guest time.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Perfmon and debug capability (IA32_PERF_CAPABILITIES), which we do not
/// virtualize.
const LEAF1_ECX_PDCM: u32 = 1 << 15;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const EXT1_ECX_CMP_LEGACY: u32 = 1 << 1;
/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` cores (ceil(log2(count))).
fn core_id_bits(count: u8) -> u32 {
    let count = u32::from(count.max(1));
    u32::BITS - (count - 1).leading_zeros()
}

/// Rewrites `entries` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `cpu_index`
/// of `cpu_count`, whose APIC id equals its index.
pub fn customize(entries: &mut [kvm_cpuid_entry2], cpu_index: u8, cpu_count: u8) {
    let vendor = vendor(entries);
    let apic_id = u32::from(cpu_index);
    let count = u32::from(cpu_count.max(1));
    let shift = core_id_bits(cpu_count);
    for entry in entries.iter_mut() {
        match entry.function {
            0x1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors
                // per package, [15:8] CLFLUSH line size in 8-byte units.
                entry.ebx = (apic_id << 24) | (count << 16) | (8 << 8);
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                entry.ecx &= !LEAF1_ECX_PDCM;
                if count > 1 {
                    entry.edx |= LEAF1_EDX_HTT;
                } else {
                    entry.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                // EAX[31:26]: cores per package - 1; [25:14]: threads
                // sharing this cache - 1 (per-core caches vs the shared LLC).
                let cache_level = (entry.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 { count - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
            }
            0xb | 0x1f => topology_level(entry, apic_id, count, shift),
            0x8000_0001 if vendor == Vendor::Amd => {
                if count > 1 {
                    entry.ecx |= EXT1_ECX_CMP_LEGACY;
                } else {
                    entry.ecx &= !EXT1_ECX_CMP_LEGACY;
                }
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // ECX[15:12]: APIC id bits for cores; [7:0]: cores - 1.
                entry.ecx = (entry.ecx & !0xf0ff) | (shift << 12) | (count - 1);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                entry.eax = apic_id;
                // EBX[15:8]: threads per core - 1 (one); [7:0]: core id.
                entry.ebx = apic_id & 0xff;
                entry.ecx = 0;
            }
            _ => {}
        }
    }
}

/// Leaves 0xB and 0x1F: one thread per core, `count` cores per package.
fn topology_level(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32, shift: u32) {
    entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    entry.edx = apic_id;
    match entry.index {
        0 => {
            entry.eax = 0;
            entry.ebx = 1;
            entry.ecx = (LEVEL_TYPE_SMT << 8) | entry.index;
        }
        1 => {
            entry.eax = shift;
            entry.ebx = count;
            entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
        }
        _ => {
            // An invalid level ends the enumeration.
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = entry.index;
        }
    }
}

/// Adds what KVM emulates but does not list as supported: the TSC-deadline
/// timer, when `tsc_deadline` (KVM_CAP_TSC_DEADLINE_TIMER) says it can.
pub fn add_emulated(supported: &mut CpuId, tsc_deadline: bool) {
    if !tsc_deadline {
        return;
    }
    for entry in supported.as_mut_slice() {
        if entry.function == 0x1 {
            entry.ecx |= LEAF1_ECX_TSC_DEADLINE;
        }
    }
}

/// The processor brand string leaves (0x8000_0002..=0x8000_0004).
const BRAND_LEAVES: std::ops::RangeInclusive<u32> = 0x8000_0002..=0x8000_0004;

/// Fills the brand string leaves that KVM left empty with the host's, so
/// the guest's `/proc/cpuinfo` names the CPU (KVM does not always pass
/// them through; a guest without them prints "AMD 17/01").
pub fn add_brand_string(supported: &mut CpuId, host: impl Fn(u32) -> [u32; 4]) {
    // A guest reads the brand leaves only when the highest extended leaf
    // includes them; never stretch that range.
    let max_extended = supported
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0000)
        .map_or(0, |e| e.eax);
    if max_extended < *BRAND_LEAVES.end() {
        return;
    }
    for leaf in BRAND_LEAVES {
        let [eax, ebx, ecx, edx] = host(leaf);
        match supported
            .as_mut_slice()
            .iter_mut()
            .find(|e| e.function == leaf)
        {
            Some(entry) => {
                if entry.eax | entry.ebx | entry.ecx | entry.edx == 0 {
                    (entry.eax, entry.ebx, entry.ecx, entry.edx) = (eax, ebx, ecx, edx);
                }
            }
            None => {
                let entry = kvm_cpuid_entry2 {
                    function: leaf,
                    eax,
                    ebx,
                    ecx,
                    edx,
                    ..Default::default()
                };
                // Full only at KVM_MAX_CPUID_ENTRIES; then the guest goes
                // without a brand string, as before.
                let _ = supported.push(entry);
            }
        }
    }
}

/// One leaf of this host's CPUID.
pub fn host_cpuid(leaf: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Builds the CPUID for one vCPU from the supported set.
pub fn for_vcpu(supported: &CpuId, cpu_index: u8, cpu_count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    customize(cpuid.as_mut_slice(), cpu_index, cpu_count);
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn vendor_leaf(name: &[u8; 12]) -> kvm_cpuid_entry2 {
        let word = |i: usize| u32::from_le_bytes(name[i..i + 4].try_into().unwrap());
        kvm_cpuid_entry2 {
            function: 0,
            ebx: word(0),
            edx: word(4),
            ecx: word(8),
            ..Default::default()
        }
    }

    #[test]
    fn tsc_deadline_only_when_kvm_emulates_it() {
        let mut cpuid = CpuId::from_entries(&[leaf(0x1, 0)]).unwrap();
        add_emulated(&mut cpuid, false);
        assert_eq!(cpuid.as_slice()[0].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        add_emulated(&mut cpuid, true);
        assert_ne!(cpuid.as_slice()[0].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn empty_brand_leaves_come_from_the_host() {
        let mut given = leaf(0x8000_0003, 0);
        given.eax = 7;
        let mut max = leaf(0x8000_0000, 0);
        max.eax = 0x8000_0008;
        let mut cpuid = CpuId::from_entries(&[leaf(0x8000_0002, 0), given, max]).unwrap();
        add_brand_string(&mut cpuid, |l| [l, 1, 2, 3]);
        assert_eq!(cpuid.as_slice()[0].eax, 0x8000_0002);
        assert_eq!(cpuid.as_slice()[0].edx, 3);
        assert_eq!(cpuid.as_slice()[1].eax, 7, "a leaf KVM filled is kept");
        let added = cpuid.as_slice().iter().find(|e| e.function == 0x8000_0004);
        assert_eq!(
            added.map(|e| e.eax),
            Some(0x8000_0004),
            "a missing leaf is added"
        );
        let mut short = CpuId::from_entries(&[leaf(0x8000_0000, 0)]).unwrap();
        add_brand_string(&mut short, |l| [l, 1, 2, 3]);
        assert_eq!(
            short.as_slice().len(),
            1,
            "no brand leaves past the highest leaf"
        );
        assert!(host_cpuid(0)[0] >= 1);
    }

    #[test]
    fn detects_vendors() {
        assert_eq!(vendor(&[vendor_leaf(b"GenuineIntel")]), Vendor::Intel);
        assert_eq!(vendor(&[vendor_leaf(b"AuthenticAMD")]), Vendor::Amd);
        assert_eq!(vendor(&[vendor_leaf(b"Whatever1234")]), Vendor::Other);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = vec![vendor_leaf(b"GenuineIntel"), leaf(1, 0)];
        customize(&mut e, 3, 4);
        assert_eq!(e[1].ebx >> 24, 3);
        assert_eq!((e[1].ebx >> 16) & 0xff, 4);
        assert_ne!(e[1].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[1].edx & LEAF1_EDX_HTT, 0);
        let mut single = vec![leaf(1, 0)];
        single[0].edx = LEAF1_EDX_HTT;
        customize(&mut single, 0, 1);
        assert_eq!(single[0].edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_describes_n_cores() {
        let mut e = vec![leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)];
        customize(&mut e, 5, 6);
        assert_eq!((e[0].eax, e[0].ebx, e[0].ecx >> 8, e[0].edx), (0, 1, 1, 5));
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx >> 8, e[1].edx), (3, 6, 2, 5));
        assert_eq!((e[2].ebx, e[2].ecx >> 8), (0, 0));
    }

    #[test]
    fn amd_leaves_match_the_core_count() {
        let mut e = vec![
            vendor_leaf(b"AuthenticAMD"),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
            leaf(0x8000_0001, 0),
        ];
        customize(&mut e, 1, 2);
        assert_eq!(e[1].ecx & 0xff, 1);
        assert_eq!((e[1].ecx >> 12) & 0xf, 1);
        assert_eq!(e[2].eax, 1);
        assert_ne!(e[3].ecx & EXT1_ECX_CMP_LEGACY, 0);
    }

    #[test]
    fn core_bits() {
        assert_eq!(core_id_bits(1), 0);
        assert_eq!(core_id_bits(2), 1);
        assert_eq!(core_id_bits(3), 2);
        assert_eq!(core_id_bits(32), 5);
    }
}
