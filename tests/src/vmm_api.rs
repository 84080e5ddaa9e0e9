//! Driving a running stratus-vmm through its API socket from inside the
//! virtual host (`scripts/vmm-api.sh`, with curl), and reading back what
//! the script printed.

use crate::case::CaseResult;
use crate::script::Script;

/// The script, installed at [`SCRIPT_PATH`] by [`install`].
pub const SCRIPT: &str = include_str!("../scripts/vmm-api.sh");
/// Where the scenario keeps the script.
pub const SCRIPT_PATH: &str = "/tmp/vmm-api.sh";

/// Writes the script into the scenario's `/tmp`.
pub fn install(script: &mut Script) {
    script.line(&format!("cat > {SCRIPT_PATH} <<'STRATUS-EOF'"));
    script.line(SCRIPT.trim_end());
    script.line("STRATUS-EOF");
}

/// The case command: the script in `mode`, with the VMM's socket, console
/// log and command line.
pub fn argv(mode: &str, socket: &str, console_log: &str, vmm: &[String]) -> Vec<String> {
    let mut argv = vec![
        "sh".to_owned(),
        SCRIPT_PATH.to_owned(),
        mode.to_owned(),
        socket.to_owned(),
        console_log.to_owned(),
    ];
    argv.extend(vmm.iter().cloned());
    argv
}

/// One request the script made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// HTTP status (0 when curl failed).
    pub status: u16,
    /// The body, newlines turned into `|`.
    pub body: String,
}

/// The request labelled `label` (`API <label> status=… body=…`).
pub fn call(case: &CaseResult, label: &str) -> Option<ApiCall> {
    let prefix = format!("API {label} status=");
    case.stdout.iter().find_map(|line| {
        let rest = line.strip_prefix(&prefix)?;
        let (status, body) = rest.split_once(" body=").unwrap_or((rest, ""));
        Some(ApiCall {
            status: status.trim().parse().unwrap_or(0),
            body: body.trim_end_matches('|').to_owned(),
        })
    })
}

/// The value of `key=` on the first stdout line starting with `prefix`.
pub fn value<'a>(case: &'a CaseResult, prefix: &str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    case.stdout
        .iter()
        .filter(|l| l.starts_with(prefix))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(needle.as_str()))
        })
}

/// The guest console lines the script printed at its end.
pub fn console(case: &CaseResult) -> Vec<&str> {
    case.stdout
        .iter()
        .skip_while(|l| l.as_str() != "CONSOLE-BEGIN")
        .skip(1)
        .take_while(|l| l.as_str() != "CONSOLE-END")
        .map(String::as_str)
        .collect()
}

/// How the VMM exited, as the script saw it.
pub fn vmm_exit(case: &CaseResult) -> Option<i32> {
    value(case, "VMM-EXIT", "status").and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::CaseExit;

    fn case(lines: &[&str]) -> CaseResult {
        CaseResult {
            name: "x".into(),
            stdout: lines.iter().map(|l| (*l).to_owned()).collect(),
            stderr: Vec::new(),
            exit: Some(CaseExit::Code(0)),
            wall: None,
        }
    }

    #[test]
    fn reads_the_scripts_lines() {
        let c = case(&[
            "SOCKET mode=600",
            "API describe status=200 body={\"id\":\"i-1\"}|",
            "API pause status=204 body=",
            "VMM-EXIT status=3",
            "CONSOLE-BEGIN",
            "STRATUS-TINY counter=1 uptime=1.00",
            "CONSOLE-END",
        ]);
        assert_eq!(
            call(&c, "describe"),
            Some(ApiCall {
                status: 200,
                body: "{\"id\":\"i-1\"}".into()
            })
        );
        assert_eq!(call(&c, "pause").unwrap().status, 204);
        assert_eq!(call(&c, "nope"), None);
        assert_eq!(value(&c, "SOCKET", "mode"), Some("600"));
        assert_eq!(vmm_exit(&c), Some(3));
        assert_eq!(console(&c), vec!["STRATUS-TINY counter=1 uptime=1.00"]);
        assert!(SCRIPT.contains("session)"));
    }
}
