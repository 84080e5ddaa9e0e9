#!/bin/sh
# Prints /root/marker, or says it is missing.
if [ -f /root/marker ]; then
    echo "MARKER: $(cat /root/marker)"
else
    echo "MARKER-MISSING"
fi
