//! End-to-end test support for Stratus.
//!
//! - [`images`]: the guest images (stock Debian kernels + a busybox
//!   initramfs), built into a cache outside the repository.
//! - [`vhost`]: the virtual host, a QEMU/TCG machine with a real `kvm_amd`
//!   inside, where stock guest kernels can run on machines whose `/dev/kvm`
//!   cannot run them; scenarios run there (or directly on hardware KVM).
//! - [`bench`]: the boot-time benchmark; [`agent_bench`]: the agent's
//!   launch and API benchmark.
//! - [`case`] and [`script`]: scenario scripts and the per-command records
//!   they print; [`vmms`]: command lines for the VMMs under test.
//!
//! The harness never reads anything outside the repository and the cache.

pub mod agent_bench;
pub mod agent_client;
pub mod ami_guest;
pub mod apt;
pub mod bench;
pub mod cache;
pub mod case;
pub mod cmd;
pub mod cpio;
pub mod debian_ami;
pub mod disk_bench;
pub mod error;
pub mod host_net;
pub mod hostcaps;
pub mod images;
pub mod kernel;
pub mod memory_bench;
pub mod net_bench;
pub mod net_guest;
pub mod script;
pub mod start_bench;
pub mod vhost;
pub mod vmm_api;
pub mod vmms;
pub mod workspace;

pub use error::{Error, Result};

/// Prints a progress note straight to stderr. Not `eprintln!`: the test
/// harness captures that, and these notes matter most when a test hangs.
pub fn note(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "stratus: {message}");
}
