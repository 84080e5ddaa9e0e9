# Measures a VMM's memory outside guest RAM once its guest is up and idle.
# Runs in the virtual host's busybox sh.
#
#   sh vmm-memory.sh LABEL GUEST_MIB CONSOLE_LOG API_SOCKET|- VMM_COMMAND...
#
# The VMM's console must go to CONSOLE_LOG (stratus-vmm --serial file:…;
# for Firecracker this script redirects its stdout there). Once the guest
# printed STRATUS-TINY-BOOTED it idles 3 s; with an API socket one
# GET / is made first, as a supervisor would. Then the RSS of every mapping
# smaller than the guest's RAM is summed from /proc/PID/smaps (Firecracker's
# own method) and printed as
#   MEMORY label=L nonguest_rss_kib=N total_rss_kib=T threads=K
label=$1
guest_kib=$(($2 * 1024))
log=$3
sock=$4
shift 4
rm -f "$log"
[ "$sock" != - ] && rm -f "$sock"
"$@" > "$log" 2>/tmp/memory-stderr.log &
pid=$!
waited=0
while ! grep -q STRATUS-TINY-BOOTED "$log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$waited" -ge 120 ]; then
        echo "MEMORY label=$label failed=boot"
        cat /tmp/memory-stderr.log
        kill -9 "$pid" 2>/dev/null
        wait "$pid"
        exit 0
    fi
    sleep 1
    waited=$((waited + 1))
done
if [ "$sock" != - ]; then
    curl -s --max-time 10 --unix-socket "$sock" http://localhost/ > /dev/null
fi
sleep 3
nonguest=$(awk -v guest="$guest_kib" '/^Size:/ { size = $2 } /^Rss:/ { if (size < guest) rss += $2 } END { print rss + 0 }' "/proc/$pid/smaps")
total=$(awk '/^Rss:/ { rss += $2 } END { print rss + 0 }' "/proc/$pid/smaps")
threads=$(ls "/proc/$pid/task" | wc -l)
echo "MEMORY label=$label nonguest_rss_kib=$nonguest total_rss_kib=$total threads=$threads"
kill "$pid"
sleep 1
kill -9 "$pid" 2>/dev/null
wait "$pid"
[ "$sock" != - ] && rm -f "$sock"
exit 0
