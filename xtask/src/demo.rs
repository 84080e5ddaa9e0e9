//! `cargo xtask demo --vmm-only`: boot the tiny guest under stratus-vmm and show it.

use std::process::Command;

use stratus_tests::hostcaps;
use stratus_tests::images;
use stratus_tests::script::quote;
use stratus_tests::vhost::{self, Mode, VirtualHost};
use stratus_tests::vmms::{Boot, GuestFiles};

use crate::steps::{self, step, Result};

/// Builds everything and boots the tiny image once.
pub fn run(vcpus: u32, memory_mib: u32) -> Result<()> {
    step("installing missing packages");
    steps::install_packages()?;
    step("building stratus-vmm (release)");
    let vmm = steps::build_vmm()?;
    step("building the tiny guest image");
    let tiny = images::tiny()?;
    let virtualization = hostcaps::detect();

    match vhost::mode() {
        Mode::Direct => {
            step(&format!(
                "{virtualization}: booting directly on this machine"
            ));
            let files = GuestFiles {
                kernel: tiny.kernel.display().to_string(),
                initrd: tiny.initrd.display().to_string(),
            };
            let argv = Boot::new(&files, vcpus, memory_mib, "").stratus_vmm();
            eprintln!("$ {} {}", vmm.display(), argv[1..].join(" "));
            let code = steps::status(Command::new(&vmm).args(&argv[1..]))?;
            explain(code);
        }
        Mode::Virtual => {
            step(&format!(
                "this machine has {virtualization}: stock kernels need hardware virtualization, \
                 so the demo runs inside the virtual host (QEMU/TCG with nested SVM; about a minute)"
            ));
            if !vhost::ensure_tools()? {
                return Err("QEMU is not available for the virtual host".into());
            }
            let case_runner = steps::build_case_runner()?;
            let files = GuestFiles::of(&tiny);
            let argv = Boot::new(&files, vcpus, memory_mib, "").stratus_vmm();
            let mut script = stratus_tests::script::Script::new();
            script.line(&format!(
                "echo '== stratus-vmm: tiny guest, {vcpus} vCPU, {memory_mib} MiB =='"
            ));
            let shown: Vec<String> = argv.iter().map(|a| quote(a)).collect();
            script.line(&format!(
                "echo {}",
                quote(&format!("$ {}", shown.join(" ")))
            ));
            script.command(&argv);
            script.line("rc=$?");
            script.line("echo \"== stratus-vmm exited with $rc ==\"");
            script.line("exit $rc");
            let mut host = VirtualHost::new("demo");
            host.case_runner(&case_runner)
                .binary("stratus-vmm", &vmm)
                .file(&files.kernel, &tiny.kernel)
                .file(&files.initrd, &tiny.initrd)
                .scenario(script.text());
            let outcome = host.run()?;
            explain(outcome.exit_code);
        }
    }
    Ok(())
}

fn explain(code: i32) {
    let meaning = match code {
        0 => "the guest powered off",
        1 => "VMM or KVM error, or guest triple fault",
        2 => "invalid configuration",
        3 => "the guest rebooted",
        _ => "unexpected",
    };
    eprintln!("stratus-vmm exit code {code}: {meaning}");
}
