#!/bin/sh
# /init of the virtual host: a QEMU/TCG machine with an emulated AMD SVM,
# where Debian's cloud kernel provides a real kvm_amd /dev/kvm.
#
# It sets up the few filesystems a VMM needs, loads the modules the harness
# listed in /stratus/modules.order (dependencies first), mounts the optional
# data disk, runs the caller's scenario, reports its exit status in a line
# the harness waits for, and powers the machine off.
export PATH=/stratus/bin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

while read -r module; do
    insmod "/stratus/modules/$module.ko" || echo "STRATUS-VHOST insmod $module failed"
done < /stratus/modules.order

# Large files travel on a read-only virtio disk instead of the initramfs;
# the initramfs has symlinks into this mount point for each of them.
if [ -e /stratus/.has-disk ]; then
    mkdir -p /mnt/stratus-disk
    tries=0
    while [ ! -b /dev/vda ] && [ "$tries" -lt 100 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    mount -t ext4 -o ro /dev/vda /mnt/stratus-disk || echo "STRATUS-VHOST disk mount failed"
fi

kvm=no
if [ -c /dev/kvm ]; then
    kvm=yes
    # One VM held for the whole run: KVM patches kernel code when its first
    # VM appears, and multi-threaded TCG sometimes crashes on that patching.
    # Doing it here, before the ready line, makes such a crash one the
    # harness retries instead of a failed scenario.
    stratus-case --hold-kvm &
    sleep 1
fi
echo "STRATUS-VHOST ready kvm=$kvm uptime=$(cut -d' ' -f1 /proc/uptime)"

export STRATUS_ROOT=/stratus HOME=/tmp
cd /stratus
if [ -e /stratus/scenario-cpu-mask ]; then
    # VirtualHost::guests_on_one_cpu: nested guests never run in parallel.
    taskset "$(cat /stratus/scenario-cpu-mask)" sh /stratus/scenario.sh
else
    sh /stratus/scenario.sh
fi
echo "STRATUS-SCENARIO-EXIT=$?"
sync
poweroff -f
