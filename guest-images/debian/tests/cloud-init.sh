#!/bin/sh
# What cloud-init made of the instance, for a test to check from the host:
# waits for cloud-init to finish its four stages, then prints the
# datasource and platform it settled on, the hostname it set, the keys it
# installed for the default user, the address the NIC got, and whether
# any stage reported an error. `cloud-init status --wait` blocks until
# cloud-final is done (user-data scripts have run by then).
status=$(cloud-init status --wait --long 2>&1)
echo "$status" | sed 's/^/CLOUD-STATUS /'
echo "INFO cloud_id=$(cloud-id 2>/dev/null)"
echo "INFO datasource=$(cloud-init query ds.meta_data.instance-id 2>/dev/null)"
echo "INFO hostname=$(hostname)"
# The default user cloud-init created (Debian's: `debian`), uid 1000.
user=$(getent passwd 1000 | cut -d: -f1)
echo "INFO default_user=$user"
if [ -n "$user" ] && [ -f "/home/$user/.ssh/authorized_keys" ]; then
    sed 's/^/AUTHORIZED-KEY /' "/home/$user/.ssh/authorized_keys"
fi
echo "INFO addresses=$(ip -4 -o addr show scope global | awk '{print $2 "=" $4}' | tr '\n' ' ')"
echo "INFO default_route=$(ip -4 route show default | head -n1)"
# How cloud-init told ifupdown to configure the NICs (from the metadata).
echo "INFO ifaces=$(grep -h '^iface' /etc/network/interfaces.d/* 2>/dev/null | tr '\n' ';')"
echo "INFO dmi_uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
echo "INFO dmi_serial=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)"
echo "INFO dmi_product=$(cat /sys/class/dmi/id/product_name 2>/dev/null)"
echo "INFO dmi_vendor=$(cat /sys/class/dmi/id/sys_vendor 2>/dev/null)"
if [ -f /var/log/cloud-init-output.log ]; then
    sed 's/^/CLOUD-OUTPUT /' /var/log/cloud-init-output.log
fi
grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log 2>/dev/null | head -n 40 | sed 's/^/CLOUD-LOG /'
# status --wait exits 0 when done without errors (1 on errors; 2 in
# newer releases for "done with recoverable errors").
echo "$status" | grep -q '^status: done' || exit 1
