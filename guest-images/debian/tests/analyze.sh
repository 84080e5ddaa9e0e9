#!/bin/sh
# Where the boot time went, while the boot is still running (this hook is
# part of it, so `systemd-analyze` would refuse): the manager's phase
# timestamps, and each unit's activation time (systemd-analyze blame's
# definition: from leaving "inactive" to entering "active"), slowest first.
ms() { echo $(($1 / 1000)); }
initrd=$(systemctl show -P InitRDTimestampMonotonic)
userspace=$(systemctl show -P UserspaceTimestampMonotonic)
echo "ANALYZE initrd_start_ms=$(ms "$initrd") userspace_start_ms=$(ms "$userspace") now_ms=$(awk '{printf "%d", $1 * 1000}' /proc/uptime)"
systemctl show -p Id -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic '*' |
    awk -F= '
        function emit() {
            if (id != "" && start > 0 && end > start) printf "%d %d %s\n", (end - start) / 1000, start / 1000, id
            id = ""; start = end = 0
        }
        $0 == "" { emit(); next }
        $1 == "Id" { id = $2 }
        $1 == "InactiveExitTimestampMonotonic" { start = $2 }
        $1 == "ActiveEnterTimestampMonotonic" { end = $2 }
        END { emit() }' |
    sort -rn | head -n 30 | while read -r took at unit; do
        echo "BLAME ${took}ms at=${at}ms $unit"
    done
