//! `stratus-agent` running instances of the Debian AMI, in the `ami` test
//! binary's shared virtual-host run, driven over its HTTP API with curl
//! as an operator would:
//!
//! register the AMI, create a subnet (a bridge), a security group that
//! admits its own members and a key pair, run two `t2.nano` instances,
//! one after the other; both reach `running` (their guests booted) with addresses from the subnet, and
//! each VMM's security-group document holds both members' addresses. A
//! rule authorized while they run reaches both VMMs at once.
//! Then `kill -9` of the agent and a new agent on the same state: both
//! instances still running, re-adopted, same ids and addresses. `kill -9`
//! of one VMM: within 5 s the instance is `stopped` with the reason.
//! Start it again: its guest boots from the same disk (a boot counter
//! its user-data keeps there says 2); stop the other (ACPI power button, the guest shuts
//! down); terminate both: taps and instance directories are gone.
//!
//! The script prints one `AGENT <step> …` line per step; the checks
//! below read them.

use base64::Engine as _;
use serde_json::Value;
use stratus_tests::case::CaseResult;
use stratus_tests::host_net::IPROUTE2;
use stratus_tests::script::Script;

use super::case;

/// Time for the whole scenario if it hits its limit.
pub const TIMEOUT_SECS: u64 = 1800;

const SUBNET: &str = "10.0.97.0/24";

/// I1's user-data: every boot appends to a file on the instance's own
/// disk and prints the count on the console.
const BOOT_COUNTER: &str = "#cloud-config\n\
bootcmd:\n\
\x20 - sh -c 'echo boot >> /var/lib/stratus-boots; echo \"AGENT-BOOTS $(wc -l < /var/lib/stratus-boots)\" > /dev/console'\n";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW stratus-test-key";

/// The shell functions an operator's session with the agent uses: start
/// the agent on `$STATE` (`start_agent`), call its API (`api METHOD PATH
/// [BODY]`), read a JSON field (`field`), an instance's state (`state`)
/// and wait for one (`wait_state ID STATE LIMIT`). Lines start `$TAG`.
pub fn shell_helpers() -> String {
    format!(
        r#"mkdir -p /tmp/agent-bin && ln -sf "$(command -v {IPROUTE2})" /tmp/agent-bin/ip
export PATH=/tmp/agent-bin:$PATH
# The agent listens on loopback, which the virtual host's init leaves down.
ip link set lo up
A=http://127.0.0.1:8470
rm -rf $STATE; mkdir -p $STATE
start_agent() {{
    stratus-agent --state-dir $STATE --listen 127.0.0.1:8470 --vmm "$(command -v stratus-vmm)" \
        ${{AGENT_EXTRA:-}} >>$STATE.out 2>>$STATE.err &
    AGENT_PID=$!
    waited=0
    while ! curl -s -o /dev/null "$A/v1/health"; do
        sleep 1; waited=$((waited + 1))
        [ "$waited" -lt 180 ] || {{ echo "$TAG start timeout"; sed 's/^/$TAG-ERR /' $STATE.err; return 1; }}
    done
    echo "$TAG started pid=$AGENT_PID"
}}
# api METHOD PATH [BODY]: prints the body, then " status=CODE" on the same line.
api() {{
    curl -s -S --max-time 60 -H "Authorization: Bearer $(cat $STATE/api-token)" \
        -H 'Content-Type: application/json' -X "$1" -w ' status=%{{http_code}}' \
        --data-binary "${{3:-}}" "$A$2"
    echo
}}
# field JSON KEY: the first "KEY": "value" in JSON.
field() {{ printf '%s' "$1" | sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }}
# state ID: the instance's state.
state() {{ field "$(api GET /v1/instances/$1)" state; }}
# wait_state ID STATE LIMIT
wait_state() {{
    waited=0
    while now=$(state $1) && [ "$now" != "$2" ]; do
        case "$now" in
            stopped|terminated)
                echo "$TAG wait $1 $2 failed now=$now $(api GET /v1/instances/$1)"
                sed "s/^/$TAG-VMM-LOG $1 /" $STATE/instances/$1/vmm.log 2>/dev/null | tail -n 20
                tail -c 3000 $STATE/instances/$1/console.log | sed "s/^/$TAG-CONSOLE $1 /"
                return 1 ;;
        esac
        sleep 2; waited=$((waited + 2))
        [ "$waited" -lt "$3" ] || {{ echo "$TAG wait $1 $2 timeout now=$now"; tail -c 2000 $STATE/instances/$1/console.log | sed "s/^/$TAG-CONSOLE $1 /"; return 1; }}
    done
    echo "$TAG wait $1 $2 ok after=$waited"
}}
"#
    )
}

/// Adds the scenario; `manifest` is an AMI bundle's manifest in the host.
pub fn add_cases(script: &mut Script, manifest: &str) {
    let helpers = shell_helpers();
    let text = format!(
        r#"STATE=/tmp/agent-state
TAG=AGENT
{helpers}start_agent || exit 1
IMG=$(field "$(api POST /v1/images '{{"manifest_path": "{manifest}"}}')" image_id)
SUB=$(field "$(api POST /v1/subnets '{{"cidr_block": "{SUBNET}"}}')" subnet_id)
SG=$(field "$(api POST /v1/security-groups '{{"group_name": "web", "description": "web tier"}}')" group_id)
api POST /v1/security-groups/$SG/authorize-ingress "{{\"ip_permissions\": [{{\"ip_protocol\": \"tcp\", \"from_port\": 8080, \"to_port\": 8080, \"user_id_group_pairs\": [{{\"group_id\": \"$SG\"}}]}}]}}" >/dev/null
api POST /v1/key-pairs '{{"key_name": "ops", "public_key_material": "{KEY}"}}' >/dev/null
echo "AGENT setup image=$IMG subnet=$SUB group=$SG"
# One at a time, as a control plane rolling out instances would.
# I1's user-data counts its boots on its own disk (bootcmd runs at every
# boot): the count goes on after a stop and start if the disk was kept.
RUN1_BODY="{{\"image_id\": \"$IMG\", \"instance_type\": \"t2.nano\", \"subnet_id\": \"$SUB\", \"security_group_ids\": [\"$SG\"], \"key_name\": \"ops\", \"client_token\": \"e2e-1\", \"user_data\": \"{boot_counter}\"}}"
RUN=$(api POST /v1/instances "$RUN1_BODY")
echo "AGENT run $RUN"
I1=$(printf '%s' "$RUN" | grep -o '"instance_id": *"i-[0-9a-f]*"' | sed -n '1s/.*"\(i-[0-9a-f]*\)"/\1/p')
wait_state $I1 running 600
RUN2=$(api POST /v1/instances "{{\"image_id\": \"$IMG\", \"instance_type\": \"t2.nano\", \"subnet_id\": \"$SUB\", \"security_group_ids\": [\"$SG\"], \"key_name\": \"ops\", \"client_token\": \"e2e-2\"}}")
I2=$(printf '%s' "$RUN2" | grep -o '"instance_id": *"i-[0-9a-f]*"' | sed -n '1s/.*"\(i-[0-9a-f]*\)"/\1/p')
echo "AGENT ids $I1 $I2"
# The first launch again, same token and parameters: that instance.
AGAIN=$(api POST /v1/instances "$RUN1_BODY")
echo "AGENT idempotent $(printf '%s' "$AGAIN" | grep -o '"instance_id": *"i-[0-9a-f]*"' | sed 's/.*"\(i-[0-9a-f]*\)"/\1/' | sort -u | tr '\n' ' ')"
# The same token with other parameters (no key, no user-data): refused.
echo "AGENT idempotent-mismatch $(api POST /v1/instances "{{\"image_id\": \"$IMG\", \"instance_type\": \"t2.nano\", \"subnet_id\": \"$SUB\", \"security_group_ids\": [\"$SG\"], \"client_token\": \"e2e-1\"}}")"
wait_state $I2 running 600
for i in $I1 $I2; do
    echo "AGENT describe $(api GET /v1/instances/$i)"
    echo "AGENT sg $i $(cat $STATE/instances/$i/sg.json)"
done
echo "AGENT health-running $(curl -s $A/v1/health)"
# The instance check: each guest answers its VMM's ARP probes (every 5 s).
waited=0
while [ "$(curl -s $A/v1/health | grep -o '"instance_status":{{"details":\[{{"name":"reachability","status":"passed"}}\]' | wc -l)" -lt 2 ] && [ "$waited" -lt 90 ]; do
    sleep 2
    waited=$((waited + 2))
done
echo "AGENT health-reachable after=$waited $(curl -s $A/v1/health)"
# A rule added while they run reaches both VMMs at once. (The second
# launch has already pushed to the first: its address joined the group.)
echo "AGENT pushes-before $(curl -s $A/metrics | grep '^stratus_agent_rule_pushes_total')"
api POST /v1/security-groups/$SG/authorize-ingress '{{"ip_permissions": [{{"ip_protocol": "udp", "from_port": 9090, "to_port": 9090, "ip_ranges": [{{"cidr_ip": "10.0.0.0/8"}}]}}]}}' >/dev/null
echo "AGENT pushes $(curl -s $A/metrics | grep '^stratus_agent_rule_pushes_total')"
for i in $I1 $I2; do
    echo "AGENT vmm-rules $i $(curl -s --unix-socket $STATE/instances/$i/api.sock http://localhost/metrics | grep '^stratus_vmm_sg_rule_packets_total' | grep 'direction="ingress"' | tr '\n' ' ')"
done
echo "AGENT console $I1 $(api GET "/v1/instances/$I1/console?bytes=100000" | grep -o 'STRATUS-AMI-BOOTED[^\\]*' | head -n1)"
# kill -9 of the agent, then a new one on the same state.
kill -9 $AGENT_PID; wait $AGENT_PID 2>/dev/null
start_agent || exit 1
echo "AGENT after-restart $I1=$(state $I1) $I2=$(state $I2)"
echo "AGENT adopted $(curl -s $A/metrics | grep '^stratus_agent_vmms_adopted_total')"
for i in $I1 $I2; do echo "AGENT describe-after $(api GET /v1/instances/$i)"; done
# kill -9 of one VMM.
P1=$(api GET /v1/instances/$I1 | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
kill -9 "$P1"
t0=$(date +%s)
while [ "$(state $I1)" != stopped ] && [ $(($(date +%s) - t0)) -lt 30 ]; do sleep 0.5; done
echo "AGENT vmm-killed after=$(($(date +%s) - t0)) $(api GET /v1/instances/$I1)"
echo "AGENT health-killed $(curl -s $A/v1/health)"
echo "AGENT start $(api POST /v1/instances/$I1/start)"
wait_state $I1 running 600
waited=0
until api GET "/v1/instances/$I1/console?bytes=1000000" | grep -q 'AGENT-BOOTS 2'; do
    sleep 2; waited=$((waited + 2)); [ "$waited" -lt 120 ] || break
done
echo "AGENT boots $(api GET "/v1/instances/$I1/console?bytes=1000000" | grep -o 'AGENT-BOOTS [0-9]*' | tr '\n' ' ')"
echo "AGENT stop $(api POST /v1/instances/$I2/stop)"
wait_state $I2 stopped 300
echo "AGENT describe-stopped $(api GET /v1/instances/$I2)"
echo "AGENT bad-start-running $(api POST /v1/instances/$I1/start)"
echo "AGENT bad-stop-stopped $(api POST /v1/instances/$I2/stop)"
echo "AGENT bad-run $(api POST /v1/instances '{{"image_id": "ami-00000000000000000", "instance_type": "t3.nano", "subnet_id": "'$SUB'", "security_group_ids": ["'$SG'"]}}')"
echo "AGENT bad-type $(api POST /v1/instances '{{"image_id": "'$IMG'", "instance_type": "z9.huge", "subnet_id": "'$SUB'", "security_group_ids": ["'$SG'"]}}')"
echo "AGENT subnet-in-use $(api DELETE /v1/subnets/$SUB)"
for i in $I1 $I2; do echo "AGENT terminate $(api POST /v1/instances/$i/terminate)"; done
wait_state $I1 terminated 300
wait_state $I2 terminated 300
for i in $I1 $I2; do
    tap=$(field "$(api GET /v1/instances/$i)" tap)
    if ip link show dev "$tap" >/dev/null 2>&1; then echo "AGENT leftover tap $tap"; else echo "AGENT tap-gone $tap"; fi
    if [ -e $STATE/instances/$i ]; then echo "AGENT leftover dir $i"; else echo "AGENT dir-gone $i"; fi
    echo "AGENT describe-terminated $(api GET /v1/instances/$i)"
done
echo "AGENT subnet-delete $(api DELETE /v1/subnets/$SUB)"
kill -TERM $AGENT_PID; wait $AGENT_PID; echo "AGENT sigterm-exit status=$?"
sed 's/^/AGENT-ERR /' $STATE.err | tail -n 80
"#,
        boot_counter = base64::engine::general_purpose::STANDARD.encode(BOOT_COUNTER),
    );
    script.line("cat > /tmp/agent-e2e.sh <<'STRATUS-EOF'");
    script.line(text.trim_end());
    script.line("STRATUS-EOF");
    script.case("agent", TIMEOUT_SECS, &["sh", "/tmp/agent-e2e.sh"]);
}

fn agent_case() -> Option<CaseResult> {
    case("agent")
}

/// The text after `AGENT <step> ` on the first such line.
fn step<'a>(c: &'a CaseResult, name: &str) -> &'a str {
    let prefix = format!("AGENT {name} ");
    c.stdout
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `AGENT {name}` line\n{}", c.describe()))
}

/// Every line of a step (several instances).
fn steps<'a>(c: &'a CaseResult, name: &str) -> Vec<&'a str> {
    let prefix = format!("AGENT {name} ");
    c.stdout
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// The JSON body of an `api` line (before ` status=`), and the status.
fn body(line: &str) -> (Value, u16) {
    let (json, status) = line.rsplit_once(" status=").unwrap_or((line, "0"));
    (
        serde_json::from_str(json).unwrap_or(Value::Null),
        status.trim().parse().unwrap_or(0),
    )
}

fn ids(c: &CaseResult) -> (String, String) {
    let line = step(c, "ids");
    let mut it = line.split_whitespace();
    let (a, b) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
    assert!(
        a.starts_with("i-") && b.starts_with("i-") && a != b,
        "{line}\n{}",
        c.describe()
    );
    (a.to_string(), b.to_string())
}

#[test]
fn agent_runs_two_instances_to_running_with_subnet_addresses() {
    let Some(c) = agent_case() else { return };
    let (i1, i2) = ids(&c);
    for i in [&i1, &i2] {
        assert!(
            c.stdout
                .iter()
                .any(|l| l.starts_with(&format!("AGENT wait {i} running ok"))),
            "{i} never ran\n{}",
            c.describe()
        );
    }
    let described = steps(&c, "describe");
    assert_eq!(described.len(), 2, "{}", c.describe());
    let mut ips = Vec::new();
    for line in described {
        let (v, status) = body(line);
        assert_eq!(status, 200, "{line}");
        assert_eq!(v["state"], "running", "{line}");
        let ip = v["private_ip"].as_str().unwrap_or_default().to_string();
        assert!(ip.starts_with("10.0.97."), "{line}");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    // The first launch's client token again: that instance, nothing new.
    let again: Vec<&str> = step(&c, "idempotent").split_whitespace().collect();
    assert_eq!(again, vec![i1.as_str()], "{}", c.describe());
    let (mismatch, status) = body(step(&c, "idempotent-mismatch"));
    assert_eq!(status, 400, "{}", c.describe());
    assert_eq!(
        mismatch["error"]["code"],
        "IdempotentParameterMismatch",
        "{}",
        c.describe()
    );
    assert!(
        step(&c, "console").contains("STRATUS-AMI-BOOTED"),
        "{}",
        c.describe()
    );
}

#[test]
fn group_references_resolve_to_the_members_addresses() {
    let Some(c) = agent_case() else { return };
    let ips: Vec<String> = steps(&c, "describe")
        .iter()
        .map(|l| {
            body(l).0["private_ip"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for line in steps(&c, "sg") {
        let json = line.split_once(' ').map_or("", |(_, j)| j);
        let doc: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        let sets = doc["address_sets"].as_object().cloned().unwrap_or_default();
        let members: Vec<String> = sets
            .values()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for ip in &ips {
            assert!(members.contains(ip), "{ip} not in {json}\n{}", c.describe());
        }
    }
}

/// The `instance_statuses` entry of `id` in a health document.
fn status_of<'a>(health: &'a Value, id: &str) -> &'a Value {
    health["instance_statuses"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["instance_id"] == id))
        .unwrap_or(&Value::Null)
}

#[test]
fn health_reports_ec2s_system_check() {
    let Some(c) = agent_case() else { return };
    let (i1, i2) = ids(&c);
    let running: Value = serde_json::from_str(step(&c, "health-running")).unwrap_or(Value::Null);
    assert_eq!(running["instances"]["running"], 2, "{running}");
    for i in [&i1, &i2] {
        let s = status_of(&running, i);
        assert_eq!(s["system_status"]["status"], "ok", "{s}\n{}", c.describe());
        assert_eq!(s["system_status"]["details"][0]["status"], "passed", "{s}");
    }
    // The killed VMM: impaired at once, with the reason.
    let killed: Value = serde_json::from_str(step(&c, "health-killed")).unwrap_or(Value::Null);
    let s = status_of(&killed, &i1);
    assert_eq!(
        s["system_status"]["status"],
        "impaired",
        "{s}\n{}",
        c.describe()
    );
    assert!(s["system_status"]["impaired_since"].is_string(), "{s}");
    assert!(
        s["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Server.")),
        "{s}"
    );
    assert_eq!(
        status_of(&killed, &i2)["system_status"]["status"],
        "ok",
        "{killed}"
    );
}

#[test]
fn health_reports_the_guests_answers_to_arp_probes() {
    let Some(c) = agent_case() else { return };
    let (i1, i2) = ids(&c);
    let line = step(&c, "health-reachable");
    let json = line.split_once(' ').map_or("", |(_, j)| j);
    let health: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    for i in [&i1, &i2] {
        let s = &status_of(&health, i)["instance_status"];
        assert_eq!(s["status"], "ok", "{s}\n{}", c.describe());
        assert_eq!(s["details"][0]["status"], "passed", "{s}");
        assert!(s["impaired_since"].is_null(), "{s}");
    }
    // Before that, right after boot: answering already, or still starting;
    // never "cannot tell" (the VMM answers for its NIC).
    let running: Value = serde_json::from_str(step(&c, "health-running")).unwrap_or(Value::Null);
    for i in [&i1, &i2] {
        let s = &status_of(&running, i)["instance_status"]["status"];
        assert!(s == "ok" || s == "initializing", "{s}\n{}", c.describe());
    }
}

#[test]
fn a_rule_authorized_while_instances_run_reaches_their_vmms() {
    let Some(c) = agent_case() else { return };
    let pushes = |name: &str| -> u64 {
        let line = step(&c, name);
        line.rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no push count in `{line}`\n{}", c.describe()))
    };
    // One document per running instance, nothing more.
    assert_eq!(
        pushes("pushes") - pushes("pushes-before"),
        2,
        "{}",
        c.describe()
    );
    let lines = steps(&c, "vmm-rules");
    assert_eq!(lines.len(), 2, "{}", c.describe());
    for line in lines {
        // Rule 0 was there from the start; rule 1 is the new one.
        for rule in ["rule=\"0\"", "rule=\"1\""] {
            assert!(
                line.contains(rule),
                "no ingress {rule} in the VMM: {line}\n{}",
                c.describe()
            );
        }
    }
}

#[test]
fn agent_restart_re_adopts_running_vmms() {
    let Some(c) = agent_case() else { return };
    let (i1, i2) = ids(&c);
    assert_eq!(
        step(&c, "after-restart"),
        format!("{i1}=running {i2}=running"),
        "{}",
        c.describe()
    );
    assert!(step(&c, "adopted").ends_with(" 2"), "{}", c.describe());
    let before: Vec<Value> = steps(&c, "describe").iter().map(|l| body(l).0).collect();
    let after: Vec<Value> = steps(&c, "describe-after")
        .iter()
        .map(|l| body(l).0)
        .collect();
    for (b, a) in before.iter().zip(&after) {
        for key in ["instance_id", "private_ip", "mac", "process"] {
            assert_eq!(
                b[key],
                a[key],
                "{key} changed over the restart\n{}",
                c.describe()
            );
        }
    }
}

#[test]
fn a_killed_vmm_is_noticed_within_5_s_and_the_instance_starts_again() {
    let Some(c) = agent_case() else { return };
    let line = step(&c, "vmm-killed");
    let secs: u64 = line
        .strip_prefix("after=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(secs <= 5, "noticed after {secs} s\n{}", c.describe());
    let json = line.split_once(' ').map_or("", |(_, j)| j);
    let (v, _) = body(json);
    assert_eq!(v["state"], "stopped", "{line}");
    assert!(
        v["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Server.InternalError")),
        "{line}"
    );
    let (i1, _) = ids(&c);
    assert!(
        c.stdout
            .iter()
            .filter(|l| l.starts_with(&format!("AGENT wait {i1} running ok")))
            .count()
            >= 2,
        "{i1} did not run again after start\n{}",
        c.describe()
    );
}

#[test]
fn a_started_instance_boots_from_the_disk_it_had() {
    let Some(c) = agent_case() else { return };
    // First boot: 1; after its VMM was killed and the instance started
    // again: 2, counted in a file on the instance's own disk (a new disk
    // would say 1 again).
    let boots: Vec<&str> = step(&c, "boots").split_whitespace().collect();
    assert_eq!(
        boots,
        ["AGENT-BOOTS", "1", "AGENT-BOOTS", "2"],
        "{}",
        c.describe()
    );
}

#[test]
fn stop_powers_the_guest_off_and_keeps_the_address() {
    let Some(c) = agent_case() else { return };
    let (_, i2) = ids(&c);
    assert!(
        c.stdout
            .iter()
            .any(|l| l.starts_with(&format!("AGENT wait {i2} stopped ok"))),
        "{}",
        c.describe()
    );
    let (v, _) = body(step(&c, "describe-stopped"));
    assert_eq!(v["state"], "stopped");
    assert!(
        v["private_ip"].as_str().is_some(),
        "the stopped instance lost its address"
    );
    assert!(
        v["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Client.UserInitiatedShutdown")),
        "{v}"
    );
}

#[test]
fn wrong_state_and_bad_input_get_4xx() {
    let Some(c) = agent_case() else { return };
    for (name, status, code) in [
        ("bad-start-running", 200, ""),
        ("bad-stop-stopped", 200, ""),
        ("bad-run", 404, "InvalidAMIID.NotFound"),
        ("bad-type", 400, "InvalidParameterValue"),
    ] {
        let (v, got) = body(step(&c, name));
        assert_eq!(got, status, "{name}: {v}");
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{name}: {v}");
        }
    }
}

#[test]
fn terminate_releases_tap_disk_and_address() {
    let Some(c) = agent_case() else { return };
    assert_eq!(steps(&c, "tap-gone").len(), 2, "{}", c.describe());
    assert_eq!(steps(&c, "dir-gone").len(), 2, "{}", c.describe());
    for line in steps(&c, "describe-terminated") {
        let (v, _) = body(line);
        assert_eq!(v["state"], "terminated", "{line}");
        assert!(v["private_ip"].is_null(), "{line}");
    }
    let (_, status) = body(step(&c, "subnet-delete"));
    assert_eq!(status, 204, "{}", c.describe());
    assert_eq!(step(&c, "sigterm-exit"), "status=0", "{}", c.describe());
}
