#!/bin/sh
# Writes /root/marker durably (as write-marker does), says so, and never
# returns: the test kills the VMM (kill -9) after FSYNC-DONE and then checks
# that the marker survived on the disk.
set -e
content=${STRATUS_MARKER:-stratus-marker-v1}
printf '%s\n' "$content" | dd of=/root/marker conv=fsync status=none
sync -f /root/marker
echo "FSYNC-DONE $content"
exec sleep infinity
