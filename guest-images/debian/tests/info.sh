#!/bin/sh
# What the guest sees: CPUs, the root mount, the command line it was booted
# with (the VMM's virtio_mmio.device= arguments, if any, show up here), the
# virtio-mmio devices ACPI announced (LNRO0005), and the virtio drivers.
# root_sysfs is the root partition's device path in sysfs: under
# /sys/devices/platform/LNRO0005:NN/ when the disk was found through the
# ACPI DSDT, under virtio-mmio.N when through virtio_mmio.device=.
echo "INFO nproc=$(nproc)"
echo "INFO kernel=$(uname -r)"
echo "INFO root=$(findmnt -n -o SOURCE,FSTYPE,OPTIONS /)"
root_dev=$(findmnt -n -o SOURCE /)
echo "INFO root_sysfs=$(readlink -f "/sys/class/block/${root_dev#/dev/}")"
echo "INFO cmdline=$(cat /proc/cmdline)"
echo "INFO acpi=$(ls /sys/bus/acpi/devices | grep LNRO | tr '\n' ' ')"
echo "INFO virtio=$(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ')"
echo "INFO blocks=$(lsblk -d -n -o NAME,SIZE,RO | tr -s ' ' | tr '\n' ',')"
echo "INFO modules=$(lsmod | awk '/^virtio/ {print $1}' | sort | tr '\n' ' ')"
echo "INFO memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "INFO uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "INFO failed-units=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
