#!/bin/sh
# Writes /root/marker (content: stratus.marker=VALUE, or a fixed default)
# and makes it durable: dd's conv=fsync flushes the file, `sync -f` the
# filesystem (its journal and the directory entry).
set -e
content=${STRATUS_MARKER:-stratus-marker-v1}
printf '%s\n' "$content" | dd of=/root/marker conv=fsync status=none
sync -f /root/marker
echo "MARKER-WRITTEN $content"
