//! Five instances of the Debian AMI under one `stratus-agent`, in the
//! `ami` test binary's shared virtual-host run, with real traffic between
//! them judged by their security groups:
//!
//! | instance | group | private IP | user-data |
//! | --- | --- | --- | --- |
//! | W1 | web | .10 (asked for) | HTTP servers on 8080 and 9090 |
//! | W2 | web | from the subnet | none |
//! | A1 | app | .20 (asked for) | probes W1:8080 and W1:9090 every 2 s |
//! | A2 | app | from the subnet | none |
//! | X1 | other | .30 (asked for) | probes W1:8080 every 2 s |
//!
//! `web` admits TCP 8080 from members of `app` (a group reference);
//! `app` and `other` admit nothing. All five are launched back to back and
//! the agent is killed with `kill -9` right after the last launch is
//! accepted, while most of them still wait for a boot slot: a new agent
//! adopts the VMM that runs and carries out the queued launches. Then:
//! all five `running` with both status checks `ok`, each guest's own
//! interface holds the address the agent gave it (cloud-init's table on
//! its console), A1 reaches W1:8080 but not 9090, X1 reaches neither;
//! a rule authorized live opens 9090 to A1 (not to X1), a rule revoked
//! live closes 8080; a reboot of W2 keeps its id and address; terminate
//! leaves no tap, directory or address behind. The agent pushes its
//! health reports to a receiver in the host (`stratus-report-sink`)
//! throughout, across its own kill -9; the receiver is down while the
//! five terminate, and the agent catches up once it is back.
//!
//! The probes print `FLEET-PROBE n=<round> <ip>:<port> ok|refused|timeout` on the
//! guest's console, read through the agent's console API: a check after
//! a rule change waits for a round that began after the change.

use serde_json::Value;
use stratus_tests::case::CaseResult;
use stratus_tests::script::{quote, Script};

use super::agent::shell_helpers;
use super::case;

/// Time for the whole scenario if it hits its limit.
pub const TIMEOUT_SECS: u64 = 2400;

const SUBNET: &str = "10.0.96.0/24";
const W1_IP: &str = "10.0.96.10";
const A1_IP: &str = "10.0.96.20";
const X1_IP: &str = "10.0.96.30";
/// The agent's periodic report interval in the scenario.
const REPORT_INTERVAL_SECS: u64 = 10;

/// User-data of W1: two HTTP servers as systemd units (cloud-final's
/// children would go with it), and `FLEET-WEB-READY` on the console once
/// both accept connections.
fn web_user_data() -> String {
    "#!/bin/sh\n\
     systemd-run --unit=web8080 python3 -m http.server 8080\n\
     systemd-run --unit=web9090 python3 -m http.server 9090\n\
     python3 - <<'READY'\n\
     import socket, time\n\
     for port in (8080, 9090):\n\
     \x20   while True:\n\
     \x20       try:\n\
     \x20           socket.create_connection(('127.0.0.1', port), 1).close()\n\
     \x20           break\n\
     \x20       except OSError:\n\
     \x20           time.sleep(0.5)\n\
     open('/dev/console', 'w').write('FLEET-WEB-READY\\n')\n\
     READY\n"
        .to_string()
}

/// User-data of a prober: every 2 s, one TCP connection per target (5 s
/// to connect, generous for an emulated host under load), the
/// outcome on the console: `ok`, `refused` (the SYN reached a closed
/// port: the security groups let it through) or `timeout` (dropped).
fn probe_user_data(targets: &[(&str, u16)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(ip, port)| format!("(\"{ip}\", {port})"))
        .collect();
    format!(
        "#!/bin/sh\n\
         cat > /usr/local/bin/fleet-probe <<'PROBE'\n\
         #!/usr/bin/python3\n\
         import socket, time\n\
         n = 0\n\
         con = open('/dev/console', 'w')\n\
         while True:\n\
         \x20   n += 1\n\
         \x20   for host, port in [{}]:\n\
         \x20       s = socket.socket()\n\
         \x20       s.settimeout(5)\n\
         \x20       try:\n\
         \x20           s.connect((host, port))\n\
         \x20           result = 'ok'\n\
         \x20       except ConnectionRefusedError:\n\
         \x20           result = 'refused'\n\
         \x20       except socket.timeout:\n\
         \x20           result = 'timeout'\n\
         \x20       except OSError:\n\
         \x20           result = 'error'\n\
         \x20       s.close()\n\
         \x20       con.write('FLEET-PROBE n=%d %s:%d %s\\n' % (n, host, port, result))\n\
         \x20       con.flush()\n\
         \x20   time.sleep(2)\n\
         PROBE\n\
         chmod +x /usr/local/bin/fleet-probe\n\
         systemd-run --unit=fleet-probe /usr/local/bin/fleet-probe\n",
        list.join(", ")
    )
}

/// Adds the scenario; `manifest` is an AMI bundle's manifest in the host.
pub fn add_cases(script: &mut Script, manifest: &str) {
    let helpers = shell_helpers();
    // The user-data goes to the API base64-encoded, as EC2's does.
    let text = format!(
        r#"STATE=/tmp/fleet-state
TAG=FLEET
# The report receiver: every report the agent pushes, one line each;
# while $SINK_DOWN exists it answers 503.
SINK_LOG=/tmp/fleet-reports.log
SINK_DOWN=/tmp/fleet-sink-down
rm -f $SINK_LOG $SINK_DOWN
stratus-report-sink 127.0.0.1:8490 $SINK_LOG $SINK_DOWN 2>/tmp/fleet-sink.err &
SINK_PID=$!
AGENT_EXTRA="--report-url http://127.0.0.1:8490/reports --report-interval-secs {REPORT_INTERVAL_SECS}"
{helpers}start_agent || exit 1
IMG=$(field "$(api POST /v1/images '{{"manifest_path": "{manifest}"}}')" image_id)
SUB=$(field "$(api POST /v1/subnets '{{"cidr_block": "{SUBNET}"}}')" subnet_id)
group() {{ field "$(api POST /v1/security-groups "{{\"group_name\": \"$1\", \"description\": \"$1 tier\"}}")" group_id; }}
WEB=$(group web); APP=$(group app); OTHER=$(group other)
echo "FLEET authorize-8080 $(api POST /v1/security-groups/$WEB/authorize-ingress "{{\"ip_permissions\": [{{\"ip_protocol\": \"tcp\", \"from_port\": 8080, \"to_port\": 8080, \"user_id_group_pairs\": [{{\"group_id\": \"$APP\"}}]}}]}}")"
echo "FLEET setup image=$IMG subnet=$SUB web=$WEB app=$APP other=$OTHER"
b64() {{ printf '%s' "$1" | base64 | tr -d '\n'; }}
# run NAME GROUP [IP] [USER_DATA_JSON_STRING]: launches one t2.nano.
run() {{
    body="{{\"image_id\": \"$IMG\", \"instance_type\": \"t2.nano\", \"subnet_id\": \"$SUB\", \"security_group_ids\": [\"$2\"], \"client_token\": \"fleet-$1\", \"tags\": {{\"Name\": \"$1\"}}"
    [ -n "${{3:-}}" ] && body="$body, \"private_ip_address\": \"$3\""
    [ -n "${{4:-}}" ] && body="$body, \"user_data\": \"$(b64 "$4")\""
    out=$(api POST /v1/instances "$body}}")
    echo "FLEET run $1 $out" >&2
    printf '%s' "$out" | grep -o '"instance_id": *"i-[0-9a-f]*"' | sed -n '1s/.*"\(i-[0-9a-f]*\)"/\1/p'
}}
W1=$(run w1 $WEB {W1_IP} {web_ud_sh})
W2=$(run w2 $WEB)
A1=$(run a1 $APP {A1_IP} {a1_ud_sh})
A2=$(run a2 $APP)
X1=$(run x1 $OTHER {X1_IP} {x1_ud_sh})
# The last launch is accepted: kill -9 the agent before it sees it boot,
# while launches are still queued (one guest boots at a time here).
echo "FLEET queued-at-kill $(api GET '/v1/instances?state=pending' | grep -o '"process": *null' | wc -l)"
kill -9 $AGENT_PID; wait $AGENT_PID 2>/dev/null
echo "FLEET ids $W1 $W2 $A1 $A2 $X1"
start_agent || exit 1
echo "FLEET adopted $(curl -s $A/metrics | grep '^stratus_agent_vmms_adopted_total')"
for i in $W1 $W2 $A1 $A2 $X1; do wait_state $i running 900; done
# Both status checks of all five.
waited=0
while [ "$(curl -s $A/v1/health | grep -o '"instance_status":{{"details":\[{{"name":"reachability","status":"passed"}}\]' | wc -l)" -lt 5 ] && [ "$waited" -lt 180 ]; do
    sleep 3; waited=$((waited + 3))
done
echo "FLEET health after=$waited $(curl -s $A/v1/health)"
for i in $W1 $W2 $A1 $A2 $X1; do echo "FLEET describe $(api GET /v1/instances/$i)"; done
# console ID: the instance's console through the agent, unescaped enough to grep.
console() {{ api GET "/v1/instances/$1/console?bytes=200000" | sed 's/\\r//g; s/\\n/\n/g'; }}
# The guest's own view of its address: cloud-init's interface table.
for i in $W1 $W2 $A1 $A2 $X1; do
    waited=0
    until console $i | grep -q 'ci-info: |  eth0  | True | *[0-9]'; do
        sleep 3; waited=$((waited + 3)); [ "$waited" -lt 300 ] || break
    done
    echo "FLEET guest-address $i $(console $i | grep 'ci-info: |  eth0  | True | *[0-9]' | head -n1)"
done
# last_round ID: the newest probe round on its console (0: none yet).
last_round() {{ console $1 | sed -n 's/.*FLEET-PROBE n=\([0-9]*\) .*/\1/p' | tail -n1 | grep . || echo 0; }}
# after_round ID TARGET N: the result for TARGET in the first round after N.
after_round() {{
    waited=0
    while :; do
        r=$(console $1 | sed -n "s/.*FLEET-PROBE n=\([0-9]*\) $2 \([a-z]*\).*/\1 \2/p" | awk -v n="$3" '$1 > n + 1 {{ print $2; exit }}')
        [ -n "$r" ] && {{ echo "$r"; return; }}
        sleep 2; waited=$((waited + 2))
        [ "$waited" -lt 240 ] || {{ echo "none"; return; }}
    done
}}
# probes PHASE: what A1 and X1 see now.
probes() {{
    na=$(last_round $A1); nx=$(last_round $X1)
    echo "FLEET probe $1 a1 {W1_IP}:8080 $(after_round $A1 {W1_IP}:8080 $na)"
    echo "FLEET probe $1 a1 {W1_IP}:9090 $(after_round $A1 {W1_IP}:9090 $na)"
    echo "FLEET probe $1 x1 {W1_IP}:8080 $(after_round $X1 {W1_IP}:8080 $nx)"
}}
# The probers and the servers start with cloud-final: wait for both.
waited=0
while [ "$(last_round $A1)" = 0 ] || [ "$(last_round $X1)" = 0 ] || ! console $W1 | grep -q FLEET-WEB-READY; do
    sleep 3; waited=$((waited + 3)); [ "$waited" -lt 300 ] || break
done
echo "FLEET probers-started after=$waited web-ready=$(console $W1 | grep -c FLEET-WEB-READY)"
probes initial
echo "FLEET authorize-9090 $(api POST /v1/security-groups/$WEB/authorize-ingress "{{\"ip_permissions\": [{{\"ip_protocol\": \"tcp\", \"from_port\": 9090, \"to_port\": 9090, \"user_id_group_pairs\": [{{\"group_id\": \"$APP\"}}]}}]}}")"
probes authorized
echo "FLEET revoke-8080 $(api POST /v1/security-groups/$WEB/revoke-ingress "{{\"ip_permissions\": [{{\"ip_protocol\": \"tcp\", \"from_port\": 8080, \"to_port\": 8080, \"user_id_group_pairs\": [{{\"group_id\": \"$APP\"}}]}}]}}")"
probes revoked
# Reboot W2: a new VMM on the same disk, same id and address; its guest
# boots again (the console file holds both boots).
pid() {{ api GET /v1/instances/$1 | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p'; }}
P0=$(pid $W2)
echo "FLEET reboot $(api POST /v1/instances/$W2/reboot)"
rebooted=0
until [ "$(console $W2 | grep -c 'STRATUS-AMI-BOOTED')" -ge 2 ]; do
    sleep 3; rebooted=$((rebooted + 3)); [ "$rebooted" -lt 600 ] || break
done
wait_state $W2 running 300
echo "FLEET rebooted after=$rebooted boots=$(console $W2 | grep -c 'STRATUS-AMI-BOOTED') pid-before=$P0 pid-after=$(pid $W2) $(api GET /v1/instances/$W2)"
# The receiver goes down for the terminations: their state-change
# reports (and a periodic one) are refused, kept and sent again later.
touch $SINK_DOWN
echo "FLEET sink-down"
for i in $W1 $W2 $A1 $A2 $X1; do api POST /v1/instances/$i/terminate >/dev/null; done
for i in $W1 $W2 $A1 $A2 $X1; do
    wait_state $i terminated 300
    tap=$(field "$(api GET /v1/instances/$i)" tap)
    if ip link show dev "$tap" >/dev/null 2>&1; then echo "FLEET leftover tap $tap"; else echo "FLEET tap-gone $tap"; fi
    if [ -e $STATE/instances/$i ]; then echo "FLEET leftover dir $i"; else echo "FLEET dir-gone $i"; fi
done
sleep {REPORT_INTERVAL_SECS}
rm -f $SINK_DOWN
echo "FLEET sink-up refused=$(grep -c '^refused' $SINK_LOG)"
waited=0
until grep -q '^taken .* terminated=5$' $SINK_LOG; do
    sleep 2; waited=$((waited + 2)); [ "$waited" -lt 180 ] || break
done
echo "FLEET caught-up after=$waited"
echo "FLEET subnet-delete $(api DELETE /v1/subnets/$SUB)"
kill -TERM $AGENT_PID; wait $AGENT_PID
kill $SINK_PID; wait $SINK_PID 2>/dev/null
sed 's/^/FLEET report /' $SINK_LOG
sed 's/^/FLEET-ERR sink: /' /tmp/fleet-sink.err
sed 's/^/FLEET-ERR /' $STATE.err | grep -v ' INFO ' | tail -n 40
"#,
        web_ud_sh = quote(&web_user_data()),
        a1_ud_sh = quote(&probe_user_data(&[(W1_IP, 8080), (W1_IP, 9090)])),
        x1_ud_sh = quote(&probe_user_data(&[(W1_IP, 8080)])),
    );
    script.line("cat > /tmp/agent-fleet.sh <<'STRATUS-EOF'");
    script.line(text.trim_end());
    script.line("STRATUS-EOF");
    script.case("fleet", TIMEOUT_SECS, &["sh", "/tmp/agent-fleet.sh"]);
}

fn fleet() -> Option<CaseResult> {
    case("fleet")
}

/// The text after `FLEET <step> ` on every such line.
fn steps<'a>(c: &'a CaseResult, name: &str) -> Vec<&'a str> {
    let prefix = format!("FLEET {name} ");
    c.stdout
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

fn step<'a>(c: &'a CaseResult, name: &str) -> &'a str {
    steps(c, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no `FLEET {name}` line\n{}", c.describe()))
}

/// The five ids, in the table's order (W1, W2, A1, A2, X1).
fn ids(c: &CaseResult) -> Vec<String> {
    let ids: Vec<String> = step(c, "ids")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 5, "{}", c.describe());
    assert!(ids.iter().all(|i| i.starts_with("i-")), "{ids:?}");
    ids
}

fn describe(c: &CaseResult, id: &str) -> Value {
    steps(c, "describe")
        .iter()
        .map(|l| l.rsplit_once(" status=").map_or(*l, |(j, _)| j))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .find(|v| v["instance_id"] == id)
        .unwrap_or_else(|| panic!("no describe of {id}\n{}", c.describe()))
}

#[test]
fn five_instances_run_with_both_status_checks_ok_after_an_agent_kill() {
    let Some(c) = fleet() else { return };
    let ids = ids(&c);
    // The kill came with launches accepted and not carried out yet.
    let queued: u32 = step(&c, "queued-at-kill").trim().parse().unwrap_or(0);
    assert!(
        queued >= 1,
        "no launch was queued at the kill: {queued}\n{}",
        c.describe()
    );
    for id in &ids {
        assert!(
            c.stdout
                .iter()
                .any(|l| l.starts_with(&format!("FLEET wait {id} running ok"))),
            "{id} never ran\n{}",
            c.describe()
        );
    }
    let line = step(&c, "health");
    let health: Value =
        serde_json::from_str(line.split_once(' ').map_or("", |(_, j)| j)).unwrap_or(Value::Null);
    for id in &ids {
        let s = health["instance_statuses"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["instance_id"] == id.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(s["system_status"]["status"], "ok", "{s}\n{}", c.describe());
        assert_eq!(
            s["instance_status"]["status"],
            "ok",
            "{s}\n{}",
            c.describe()
        );
    }
}

#[test]
fn each_guest_holds_the_address_the_agent_gave_it() {
    let Some(c) = fleet() else { return };
    let ids = ids(&c);
    let asked = [Some(W1_IP), None, Some(A1_IP), None, Some(X1_IP)];
    let mut seen = Vec::new();
    for (id, asked) in ids.iter().zip(asked) {
        let ip = describe(&c, id)["private_ip"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(ip.starts_with("10.0.96."), "{id}: {ip}");
        if let Some(asked) = asked {
            assert_eq!(ip, asked, "{id}");
        }
        let guest = steps(&c, "guest-address")
            .into_iter()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_default();
        assert!(
            guest.contains(&format!(" {ip} ")),
            "{id}'s guest does not show {ip}: {guest}\n{}",
            c.describe()
        );
        seen.push(ip);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "addresses are unique: {seen:?}");
}

/// The probe result of `who` for `target` in `phase`.
fn probe(c: &CaseResult, phase: &str, who: &str, target: &str) -> String {
    let prefix = format!("{phase} {who} {target} ");
    steps(c, "probe")
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no probe {prefix}\n{}", c.describe()))
        .trim()
        .to_string()
}

#[test]
fn security_groups_between_instances_follow_the_rules_and_live_changes() {
    let Some(c) = fleet() else { return };
    let (w8080, w9090) = (format!("{W1_IP}:8080"), format!("{W1_IP}:9090"));
    assert!(
        step(&c, "probers-started").ends_with("web-ready=1"),
        "{}",
        c.describe()
    );
    // `timeout`: the SYN was dropped (a refused connection would mean
    // it reached W1).
    let expected = [
        ("initial", "a1", &w8080, "ok"),
        ("initial", "a1", &w9090, "timeout"),
        ("initial", "x1", &w8080, "timeout"),
        ("authorized", "a1", &w8080, "ok"),
        ("authorized", "a1", &w9090, "ok"),
        ("authorized", "x1", &w8080, "timeout"),
        ("revoked", "a1", &w8080, "timeout"),
        ("revoked", "a1", &w9090, "ok"),
        ("revoked", "x1", &w8080, "timeout"),
    ];
    for (phase, who, target, want) in expected {
        assert_eq!(
            probe(&c, phase, who, target),
            want,
            "{phase}: {who} → {target}\n{}",
            c.describe()
        );
    }
    for change in ["authorize-9090", "revoke-8080"] {
        assert!(step(&c, change).ends_with("status=200"), "{}", c.describe());
    }
}

#[test]
fn reboot_keeps_the_id_and_the_address() {
    let Some(c) = fleet() else { return };
    let ids = ids(&c);
    let before = describe(&c, &ids[1]);
    let line = step(&c, "rebooted");
    assert!(line.contains("boots=2"), "{line}\n{}", c.describe());
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
    };
    assert!(
        !field("pid-before=").is_empty() && field("pid-before=") != field("pid-after="),
        "a new VMM runs the rebooted guest: {line}"
    );
    let json = line.splitn(5, ' ').nth(4).unwrap_or_default();
    let after: Value = serde_json::from_str(json.rsplit_once(" status=").map_or(json, |(j, _)| j))
        .unwrap_or(Value::Null);
    assert_eq!(after["instance_id"], before["instance_id"], "{line}");
    assert_eq!(after["private_ip"], before["private_ip"], "{line}");
    assert_eq!(after["state"], "running", "{line}");
}

#[test]
fn terminate_leaves_nothing_behind() {
    let Some(c) = fleet() else { return };
    assert_eq!(steps(&c, "tap-gone").len(), 5, "{}", c.describe());
    assert_eq!(steps(&c, "dir-gone").len(), 5, "{}", c.describe());
    assert!(steps(&c, "leftover").is_empty(), "{}", c.describe());
    assert!(
        step(&c, "subnet-delete").ends_with("status=204")
            || step(&c, "subnet-delete").ends_with("status=200"),
        "{}",
        c.describe()
    );
}

/// One report as the receiver logged it.
#[derive(Debug)]
struct Report {
    taken: bool,
    seq: u64,
    reason: String,
    running: u64,
    terminated: u64,
}

fn reports(c: &CaseResult) -> Vec<Report> {
    steps(c, "report")
        .iter()
        .map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in report line `{line}`"))
            };
            let number = |key: &str| field(key).parse::<u64>().unwrap_or(u64::MAX);
            Report {
                taken: line.starts_with("taken "),
                seq: number("seq="),
                reason: field("reason=").to_string(),
                running: number("running="),
                terminated: number("terminated="),
            }
        })
        .collect()
}

#[test]
fn reports_arrive_in_sequence_across_an_agent_kill_and_catch_up_after_the_receiver_was_down() {
    let Some(c) = fleet() else { return };
    let all = reports(&c);
    let taken: Vec<&Report> = all.iter().filter(|r| r.taken).collect();
    let seqs: Vec<u64> = taken.iter().map(|r| r.seq).collect();
    // Delivered oldest first, one at a time, and numbered from the store:
    // strictly increasing, also across the agent's kill -9 and restart.
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers out of order: {seqs:?}"
    );
    // The scenario runs for many minutes with a 10 s interval.
    let periodic = taken.iter().filter(|r| r.reason == "periodic").count();
    assert!(periodic >= 10, "{periodic} periodic reports: {seqs:?}");
    // The launches and boots made state-change reports, one showing all
    // five running.
    assert!(
        taken
            .iter()
            .any(|r| r.reason == "state-change" && r.running == 5),
        "no state-change report with five running\n{}",
        c.describe()
    );
    // While down, the receiver refused state-change reports; each one it
    // refused arrived later, once it was back.
    let refused: Vec<&Report> = all.iter().filter(|r| !r.taken).collect();
    assert!(
        refused.iter().any(|r| r.reason == "state-change"),
        "nothing refused while the receiver was down: {}",
        step(&c, "sink-up")
    );
    for r in &refused {
        assert!(
            seqs.contains(&r.seq),
            "report {} was refused and never delivered later: {seqs:?}",
            r.seq
        );
    }
    assert!(
        step(&c, "caught-up").starts_with("after=") && taken.iter().any(|r| r.terminated == 5),
        "no report of the five terminated arrived after the receiver came back\n{}",
        c.describe()
    );
}
