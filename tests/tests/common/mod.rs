//! Shared setup of the end-to-end tests: each test binary boots one virtual
//! host for all its checks, so that each check can fail on its own without
//! paying for another boot.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::Path;
use std::sync::OnceLock;

use stratus_tests::vhost::{self, Outcome, VirtualHost};

/// Prepares the tools; `None` means this machine cannot run the test and
/// it was skipped (never in CI, where a missing QEMU fails instead).
pub fn tools_ready() -> bool {
    vhost::ensure_tools().unwrap_or_else(|err| panic!("cannot set up the virtual host: {err}"))
}

/// A virtual host with this test binary's own `stratus-case`.
pub fn host(name: &str) -> VirtualHost {
    let mut host = VirtualHost::new(name);
    host.case_runner(Path::new(env!("CARGO_BIN_EXE_stratus-case")));
    host
}

/// Runs `build` once per test binary and shares the outcome; `None` when
/// skipped. A failed run fails every test that asks for it, with the error.
pub fn shared_run(
    cell: &'static OnceLock<Option<Result<Outcome, String>>>,
    build: impl FnOnce() -> stratus_tests::Result<VirtualHost>,
) -> Option<&'static Outcome> {
    let result = cell.get_or_init(|| {
        if !tools_ready() {
            return None;
        }
        Some(
            build()
                .and_then(|host| host.run())
                .map_err(|err| err.to_string()),
        )
    });
    match result {
        None => None,
        Some(Ok(outcome)) => Some(outcome),
        Some(Err(err)) => panic!("virtual host run failed: {err}"),
    }
}
