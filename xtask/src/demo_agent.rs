//! `cargo xtask demo`: the product end to end. `stratus-agent` starts on
//! a host (this machine with hardware virtualization, else the virtual
//! host), and the `stratus` CLI drives it as an operator would: register
//! the Debian AMI, create a subnet, a security group and a key pair, run
//! one instance whose user-data reads its own metadata over IMDSv2, show
//! the instance, its console and its status checks, then terminate it.

use std::path::PathBuf;

use stratus_tests::debian_ami;
use stratus_tests::host_net;
use stratus_tests::hostcaps;
use stratus_tests::vhost::{self, Mode};
use stratus_tests::workspace;

use crate::steps::{self, step, Result};

/// Where the guest's user-data prints what the metadata service told it.
const USER_DATA: &str = r#"#!/usr/bin/python3
# Reads this instance's metadata over IMDSv2 and prints it on the console.
import json
import urllib.request

BASE = "http://169.254.169.254/latest/"
token = urllib.request.urlopen(urllib.request.Request(
    BASE + "api/token", method="PUT",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})).read().decode()

def get(path):
    request = urllib.request.Request(BASE + path, headers={"X-aws-ec2-metadata-token": token})
    return urllib.request.urlopen(request).read().decode()

for path in ["meta-data/instance-id", "meta-data/instance-type", "meta-data/local-ipv4",
             "meta-data/mac", "meta-data/placement/availability-zone",
             "meta-data/security-groups", "meta-data/public-keys/0/openssh-key"]:
    print("DEMO-METADATA %s = %s" % (path, get(path).strip()), flush=True)
document = json.loads(get("dynamic/instance-identity/document"))
print("DEMO-METADATA identity document:", json.dumps(document, sort_keys=True), flush=True)
signature = get("dynamic/instance-identity/signature").strip()
print("DEMO-METADATA identity signature (RSA-SHA256, base64):", signature[:40] + "...", flush=True)
"#;

/// A public key for the demo's key pair (its private half is not kept).
const DEMO_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW stratus-demo";

/// Builds what the demo needs and runs it.
pub fn run(instance_type: &str) -> Result<()> {
    step("installing missing packages");
    steps::install_packages()?;
    step("building stratus-vmm, stratus-agent and the stratus CLI (release)");
    steps::cargo(&[
        "build",
        "--release",
        "-p",
        "stratus-vmm",
        "-p",
        "stratus-agent",
    ])?;
    let release = workspace::profile_dir(true);
    let binary = |name: &str| -> PathBuf { release.join(name) };
    step("building the Debian AMI (cached after the first time)");
    let ami = debian_ami::debian_ami()?;
    let virtualization = hostcaps::detect();
    match vhost::mode() {
        Mode::Direct => step(&format!(
            "{virtualization}: the agent runs on this machine (as root; it makes a bridge and a tap, \
             and removes them at the end)"
        )),
        Mode::Virtual => {
            step(&format!(
                "this machine has {virtualization}: stock kernels need hardware virtualization, \
                 so the agent runs inside the virtual host (QEMU/TCG with nested SVM; \
                 about two minutes in all)"
            ));
            if !vhost::ensure_tools()? {
                return Err("QEMU is not available for the virtual host".into());
            }
        }
    }
    let case_runner = steps::build_case_runner()?;
    let mut host = steps::agent_host("demo", &release, &case_runner, &ami)?;
    host.binary("stratus", &binary("stratus"))
        .binary("qemu-img", &vhost::which("qemu-img")?)
        .memory_mib(3072)
        // Nested guests on multi-threaded TCG occasionally crash (see
        // `guests_on_one_cpu`); the demo's one instance is no exception.
        .guests_on_one_cpu()
        .scenario(&scenario(instance_type));
    let outcome = host.run()?;
    if outcome.exit_code == 0 {
        eprintln!("demo: done (the instance was terminated and the agent stopped)");
        Ok(())
    } else {
        Err(format!(
            "the demo failed (exit {}); the whole log is {}",
            outcome.exit_code,
            outcome.log.display()
        )
        .into())
    }
}

/// The operator's session, as a shell script.
fn scenario(instance_type: &str) -> String {
    format!(
        r#"set -u
mkdir -p /tmp/demo-bin && ln -sf "$(command -v {ip})" /tmp/demo-bin/ip
export PATH=/tmp/demo-bin:$PATH
ip link set lo up
say() {{ printf '\n== %s\n' "$*"; }}
run() {{ printf '$ %s\n' "$*"; "$@"; }}
# The agent registers bundles by path and keeps overlays beside nothing
# of the bundle: a copy on the host's tmpfs keeps the data disk read-only.
mkdir -p /tmp/ami
cp {disk} /tmp/ami/disk.qcow2 && cp {manifest} /tmp/ami/manifest.json
STATE=/tmp/stratus-demo
rm -rf $STATE
say "starting stratus-agent (state in $STATE, API on 127.0.0.1:8470)"
stratus-agent --state-dir $STATE --listen 127.0.0.1:8470 --vmm "$(command -v stratus-vmm)" 2>/tmp/agent.err &
AGENT=$!
# On the way out, also on failure: no instance, tap or bridge is left.
cleanup() {{
    if [ -n "${{ID:-}}" ]; then stratus instances terminate $ID >/dev/null 2>&1; sleep 5; fi
    if [ -n "${{SUBNET:-}}" ]; then stratus subnets delete $SUBNET >/dev/null 2>&1; fi
    kill -TERM $AGENT 2>/dev/null; wait $AGENT 2>/dev/null
}}
trap cleanup EXIT
tries=0
until curl -s -o /dev/null http://127.0.0.1:8470/v1/health; do
    sleep 1; tries=$((tries + 1))
    if [ $tries -ge 60 ]; then echo "the agent did not start:"; cat /tmp/agent.err; exit 1; fi
done
export STRATUS_TOKEN="$(cat $STATE/api-token)"
# field KEY: the first "KEY": "value" of the JSON on stdin.
field() {{ sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }}

say "register the AMI, make a subnet, a security group and a key pair"
run stratus images register /tmp/ami/manifest.json || exit 1
AMI=$(stratus --output json images list | field image_id)
run stratus subnets create 10.0.10.0/24 || exit 1
SUBNET=$(stratus --output json subnets list | field subnet_id)
run stratus security-groups create demo --description "stratus demo" || exit 1
SG=$(stratus --output json security-groups list | field group_id)
run stratus security-groups authorize-ingress $SG --protocol tcp --port 22 --cidr 0.0.0.0/0 || exit 1
printf '%s\n' '{key}' > /tmp/demo.pub
run stratus key-pairs import demo --public-key-file /tmp/demo.pub || exit 1
cat > /tmp/user-data <<'DEMO-EOF'
{user_data}DEMO-EOF

say "run one {instance_type} instance whose user-data prints its metadata"
run stratus instances run --image-id $AMI --instance-type {instance_type} --subnet-id $SUBNET \
    --security-group-ids $SG --key-name demo --user-data-file /tmp/user-data --tag Name=demo || exit 1
ID=$(stratus --output json instances list | field instance_id)
say "waiting for $ID to be running (its guest booted)"
waited=0
while :; do
    state=$(stratus --output json instances describe $ID | field state)
    [ "$state" = running ] && break
    case "$state" in stopped|terminated) echo "the instance ended: $state"; stratus instances describe $ID; exit 1 ;; esac
    sleep 5; waited=$((waited + 5))
    [ $waited -lt 900 ] || {{ echo "still $state after $waited s"; exit 1; }}
done
echo "running after about $waited s"
run stratus instances list
say "waiting for cloud-init to run the user-data"
waited=0
until stratus instances console $ID | grep -q 'DEMO-METADATA identity'; do
    sleep 5; waited=$((waited + 5))
    [ $waited -lt 600 ] || {{ echo "no metadata on the console after $waited s"; stratus instances console $ID | tail -n 40; exit 1; }}
done
say "what the guest read from its metadata service (from its console)"
printf '$ stratus instances console %s | grep DEMO-METADATA\n' $ID
stratus instances console $ID | grep -o 'DEMO-METADATA.*'
say "its status checks (the instance check is the guest answering ARP probes)"
waited=0
until stratus --output json health | tr -d ' \n' | grep -q '"instance_status":{{"details":\[{{"name":"reachability","status":"passed"}}'; do
    sleep 5; waited=$((waited + 5)); [ $waited -lt 60 ] || break
done
run stratus health
say "terminate it"
run stratus instances terminate $ID || exit 1
waited=0
until [ "$(stratus --output json instances describe $ID | field state)" = terminated ]; do
    sleep 2; waited=$((waited + 2)); [ $waited -lt 300 ] || {{ echo "not terminated after $waited s"; exit 1; }}
done
run stratus instances list
run stratus subnets delete $SUBNET && SUBNET=
"#,
        ip = host_net::IPROUTE2,
        disk = steps::AMI_DISK_IN_HOST,
        manifest = steps::AMI_MANIFEST_IN_HOST,
        key = DEMO_KEY,
        user_data = USER_DATA,
    )
}
