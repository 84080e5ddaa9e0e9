# Drives a running stratus-vmm through its API socket with curl, the way
# an operator or the agent would, and prints what happened as lines the
# tests parse. Runs in the virtual host's busybox sh.
#
#   sh vmm-api.sh MODE SOCKET CONSOLE_LOG VMM_COMMAND...
#
# The VMM runs in the background with its console in CONSOLE_LOG; the
# log is printed at the end. MODE is one of:
#   session       pause/resume a counting guest, read every route, send
#                 bad requests, then reset it with the Reboot action;
#   ctrl-alt-del  SendCtrlAltDel to a booted, idle guest;
#   shutdown      press the power button of a booted, idle guest;
#   rate          change a drive's rate limiter while the guest measures;
#   net           once the guest has its address (STRATUS-NET ready):
#                 ping it from the host, read the metrics, start a second
#                 VMM on the same tap (it must refuse), then Reboot.
# A guest counts as booted once its console shows STRATUS-TINY-BOOTED
# (the tiny image) or STRATUS-AMI-BOOTED (the Debian AMI).
mode=$1
sock=$2
log=$3
shift 3
rm -f "$sock" "$log"
"$@" &
pid=$!

# api LABEL METHOD PATH [BODY [HEADER]]: one request; prints
# "API LABEL status=CODE body=BODY-ON-ONE-LINE".
api() {
    label=$1
    method=$2
    path=$3
    body=$4
    header=${5:-Content-Type: application/json}
    if [ -n "$body" ]; then
        out=$(curl -s -S --max-time 30 --unix-socket "$sock" -X "$method" -H "$header" \
            -d "$body" -w '\n%{http_code}' "http://localhost$path")
    else
        out=$(curl -s -S --max-time 30 --unix-socket "$sock" -X "$method" -H "$header" \
            -w '\n%{http_code}' "http://localhost$path")
    fi
    code=$(printf '%s\n' "$out" | tail -n 1)
    text=$(printf '%s\n' "$out" | sed '$d' | tr '\n' '|')
    echo "API $label status=$code body=$text"
}

# wait_for PATTERN SECONDS: until the console log has PATTERN.
wait_for() {
    waited=0
    while ! grep -q "$1" "$log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "WAIT $1 vmm-exited-early"
            return 1
        fi
        if [ "$waited" -ge "$2" ]; then
            echo "WAIT $1 timeout"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "WAIT $1 ok"
}

counters() {
    grep -c 'STRATUS-TINY counter=' "$log"
}

finish() {
    # A VMM still running after its test is killed, never left behind.
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 240 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid"
    echo "VMM-EXIT status=$?"
    if [ -e "$sock" ]; then echo "SOCKET-LEFT"; else echo "SOCKET-REMOVED"; fi
    echo "CONSOLE-BEGIN"
    cat "$log"
    echo "CONSOLE-END"
}

waited=0
while [ ! -S "$sock" ] && [ "$waited" -lt 30 ]; do
    sleep 1
    waited=$((waited + 1))
done
echo "SOCKET mode=$(stat -c %a "$sock" 2>/dev/null)"

case "$mode" in
session)
    wait_for 'STRATUS-TINY counter=5 ' 120
    api describe GET /
    api config GET /vm/config
    curl -s -S --unix-socket "$sock" http://localhost/metrics | sed 's/^/METRICS /'
    api metrics_json GET /metrics "" "Accept: application/json"
    api console GET '/console?bytes=64'
    api pause PATCH /vm '{"state": "Paused"}'
    # Output already in flight when the vCPU parked may still land.
    sleep 0.5
    before=$(counters)
    sleep 2
    after=$(counters)
    echo "PAUSE before=$before after=$after"
    api describe_paused GET /
    api shutdown_paused PUT /actions '{"action_type": "Shutdown"}'
    api pause_again PATCH /vm '{"state": "Paused"}'
    api resume PATCH /vm '{"state": "Resumed"}'
    sleep 2
    echo "RESUME count=$(counters)"
    api bad_state PATCH /vm '{"state": "Off"}'
    api bad_json PUT /actions '{'
    api bad_action PUT /actions '{"action_type": "InstanceStart"}'
    api bad_path GET /nope
    api bad_method DELETE /vm
    api bad_query GET '/console?bytes=x'
    api unknown_drive PATCH /drives/nope '{"drive_id": "nope"}'
    api still_running GET /
    api reboot PUT /actions '{"action_type": "Reboot"}'
    ;;
ctrl-alt-del)
    if wait_for 'STRATUS-[A-Z]*-BOOTED' 300; then
        sleep 1
        api ctrl_alt_del PUT /actions '{"action_type": "SendCtrlAltDel"}'
    fi
    ;;
shutdown)
    if wait_for 'STRATUS-[A-Z]*-BOOTED' 300; then
        sleep 1
        api shutdown PUT /actions '{"action_type": "Shutdown"}'
    fi
    ;;
rate)
    if wait_for 'RATE-PHASE1-DONE' 180; then
        api patch_drive PATCH /drives/rated \
            '{"drive_id": "rated", "rate_limiter": {"bandwidth": {"size": 8388608, "refill_time": 1000}, "ops": {"size": 200, "refill_time": 1000}}}'
        api patch_bad_limiter PATCH /drives/rated \
            '{"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}'
        api patch_path PATCH /drives/rated '{"path_on_host": "/etc/shadow"}'
    fi
    ;;
net)
    if wait_for 'STRATUS-NET ready' 240; then
        guest=$(sed -n 's/.*STRATUS-NET dhcp=bound ip=\([0-9.]*\).*/\1/p' "$log" | head -n 1)
        if [ -n "$guest" ] && ping -c 3 -W 3 "$guest" >/dev/null 2>&1; then
            echo "HOST ping_guest=ok"
        else
            echo "HOST ping_guest=failed guest=$guest"
        fi
        curl -s -S --unix-socket "$sock" http://localhost/metrics | sed 's/^/METRICS /'
        # The same command on another socket: the tap is taken.
        n=$#
        for arg in "$@"; do
            [ "$arg" = "$sock" ] && arg="$sock-busy"
            set -- "$@" "$arg"
        done
        shift "$n"
        "$@" >/tmp/busy-tap.out 2>/tmp/busy-tap.err
        echo "BUSY-TAP exit=$?"
        sed 's/^/BUSY-TAP-MSG /' /tmp/busy-tap.err
    fi
    api reboot PUT /actions '{"action_type": "Reboot"}'
    ;;
*)
    echo "unknown mode $mode"
    ;;
esac
finish
