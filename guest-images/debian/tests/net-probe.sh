#!/bin/sh
# Probes a peer instance with real traffic: stratus.peer=IP,
# stratus.allow_port=P (must connect; retried while the peer boots, up to
# stratus.wait_secs, default 300), stratus.deny_port=P (must time out),
# ping (no ICMP rule on the peer: must fail), then tells the peer it is
# done (GET /done on the allowed port). One PROBE line per check.
peer=$STRATUS_PEER
allow=${STRATUS_ALLOW_PORT:-8080}
deny=${STRATUS_DENY_PORT:-8082}
limit=${STRATUS_WAIT_SECS:-300}
start=$(date +%s)
while ! answer=$(curl -s -S --max-time 5 "http://$peer:$allow/" 2>&1); do
    if [ $(($(date +%s) - start)) -ge "$limit" ]; then
        break
    fi
    sleep 2
done
echo "PROBE allowed $answer"
if answer=$(curl -s -S --max-time 10 "http://$peer:$deny/" 2>&1); then
    echo "PROBE denied connected $answer"
else
    echo "PROBE denied failed $answer"
fi
if ping -c 2 -W 3 "$peer" >/dev/null 2>&1; then
    echo "PROBE ping ok"
else
    echo "PROBE ping failed"
fi
echo "PROBE done $(curl -s -S --max-time 10 "http://$peer:$allow/done" 2>&1)"
