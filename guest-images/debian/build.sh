#!/bin/bash
# Builds the Debian 12 (bookworm) AMI: a GPT disk with one ext4 root
# partition, as raw and qcow2, and the AMI manifest beside them.
#
#   build.sh ROOTFS_DIR OUT_DIR
#
# ROOTFS_DIR must not exist or be empty; it is the staging tree (about
# 500 MB) and can be deleted afterwards. OUT_DIR receives disk.raw,
# disk.qcow2, manifest.json, packages.txt and info. Needs root (debootstrap,
# chroot) and debootstrap, qemu-img, sfdisk, mkfs.ext4 (e2fsprogs >= 1.43 for
# `mkfs.ext4 -d`). No loop devices, no mounts outside ROOTFS_DIR.
#
# Environment (all optional):
#   STRATUS_DEBIAN_MIRROR           Debian mirror (default: the bookworm
#                                   entry in /etc/apt/sources.list.d/ or
#                                   /etc/apt/sources.list)
#   STRATUS_DEBIAN_SECURITY_MIRROR  security mirror (same lookup for
#                                   bookworm-security; none: no updates)
#   STRATUS_AMI_ID                  manifest id (default: derived from the
#                                   recipe's sha256)
#   STRATUS_ROOT_UUID               ext4 UUID (default: derived likewise)
#   STRATUS_DISK_MIB                disk size in MiB (default 1024)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite=bookworm
# Packages beyond minbase. busybox is there for `devmem` (the boot-complete
# signal), fio for the disk benchmark, zstd so the initramfs is compressed
# with it (else gzip), dbus so that `systemctl poweroff` works cleanly.
include=linux-image-cloud-amd64,initramfs-tools,systemd-sysv,udev,iproute2,ifupdown,isc-dhcp-client,openssh-server,curl,ca-certificates,zstd,dbus,busybox,fio
# Installed with apt afterwards (debootstrap's resolver cannot follow
# their virtual dependencies): cloud-init, with Debian's default settings,
# configures the instance from its metadata as on EC2 (what makes this an
# AMI rather than a disk image); python3-pip installs botocore.
apt_packages="cloud-init python3-pip"
# botocore from PyPI (not Debian's older package): the IMDS client every
# AWS SDK for Python uses, pinned so a given recipe gives one image.
botocore_version=1.44.8
# Modules the initramfs must contain for Stratus's virtio-mmio devices.
required_modules="virtio virtio_ring virtio_mmio virtio_blk virtio_net"
cmdline="console=ttyS0 reboot=k panic=-1 quiet"

die() {
    echo "build.sh: $*" >&2
    exit 1
}
step() {
    echo "build.sh: [$(date +%T)] $*" >&2
}

[ $# -eq 2 ] || die "usage: build.sh ROOTFS_DIR OUT_DIR"
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
rootfs=$1
out=$2
if [ -e "$rootfs" ] && [ -n "$(ls -A "$rootfs")" ]; then
    die "$rootfs is not empty"
fi
mkdir -p "$rootfs" "$out"
rootfs=$(cd "$rootfs" && pwd)
out=$(cd "$out" && pwd)

# The first URI of a "deb" source with SUITE and component main, from the
# deb822 *.sources files and the one-line *.list files apt itself reads.
mirror_for() {
    local want=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v want="$want" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = uris = suites = comps = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/ || index(line, ":") == 0) continue
                    key = tolower(substr(line, 1, index(line, ":") - 1))
                    val = " " substr(line, index(line, ":") + 1) " "
                    gsub(/[ \t]+/, " ", val)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "components") comps = val
                    else if (key == "enabled") enabled = val
                }
                if (enabled ~ / no /) next
                if (types ~ / deb / && suites ~ (" " want " ") && comps ~ / main /) {
                    split(uris, u, " ")
                    for (j in u) if (u[j] ~ /^(https?|file):/) { print u[j]; exit }
                }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENT...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v want="$want" '
            $1 == "deb" && $3 == want {
                for (i = 4; i <= NF; i++) if ($i == "main") { print $2; exit }
            }'
    done
}

mirror=${STRATUS_DEBIAN_MIRROR:-$(mirror_for "$suite" | head -n1)}
[ -n "$mirror" ] || die "no Debian mirror for $suite in /etc/apt; set STRATUS_DEBIAN_MIRROR"
security=${STRATUS_DEBIAN_SECURITY_MIRROR:-$(mirror_for "$suite-security" | head -n1)}
[ "$security" = none ] && security=

# Default identities come from the recipe itself, so the same recipe gives
# the same id and filesystem UUID (the Rust driver passes ids derived from
# its cache fingerprint instead).
recipe_hash=$(cd "$here" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)
ami_id=${STRATUS_AMI_ID:-ami-${recipe_hash:0:17}}
root_uuid=${STRATUS_ROOT_UUID:-${recipe_hash:0:8}-${recipe_hash:8:4}-4${recipe_hash:13:3}-8${recipe_hash:17:3}-${recipe_hash:20:12}}
[[ $ami_id =~ ^ami-[0-9a-f]{17}$ ]] || die "bad AMI id $ami_id"
disk_mib=${STRATUS_DISK_MIB:-1024}

# Everything mounted under the rootfs (by us, or by debootstrap if it was
# interrupted) is unmounted on every way out, deepest first, so that nobody
# later deletes the host's /dev through a leftover bind mount.
unmount_all() {
    local m
    awk -v r="$rootfs/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" || true
        done
}
trap unmount_all EXIT
trap 'exit 130' INT TERM
mount_chroot() {
    mount -t proc proc "$rootfs/proc"
    mount -t sysfs sysfs "$rootfs/sys"
    mount --bind /dev "$rootfs/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$rootfs/dev/pts"
}
in_chroot() {
    chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"
}

step "debootstrap $suite from $mirror"
debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" >&2

step "installing the configuration"
# Files owned by root whoever checked the repository out; existing
# directories keep their own modes.
tar -C "$here/overlay" --owner=0 --group=0 -cf - . |
    tar -C "$rootfs" --no-same-owner --no-overwrite-dir -xf -
chmod 0755 "$rootfs/usr/local/lib/stratus/boot-complete" "$rootfs/usr/local/lib/stratus/test-hook"
mkdir -p "$rootfs/usr/local/lib/stratus/tests"
install -m 0755 "$here"/tests/*.sh "$rootfs/usr/local/lib/stratus/tests/"
cat > "$rootfs/etc/fstab" <<EOF
# The VMM boots with root=UUID=$root_uuid (found on the disk).
UUID=$root_uuid / ext4 errors=remount-ro 0 1
EOF
{
    echo "Types: deb"
    echo "URIs: $mirror"
    echo "Suites: $suite $suite-updates"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if [ -n "$security" ]; then
        echo
        echo "Types: deb"
        echo "URIs: $security"
        echo "Suites: $suite-security"
        echo "Components: main"
        echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    fi
} > "$rootfs/etc/apt/sources.list.d/debian.sources"
rm -f "$rootfs/etc/apt/sources.list"
# No daemons may start inside the chroot while packages are upgraded.
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"

mount_chroot
step "applying $suite-updates and security updates"
in_chroot apt-get -q update >&2
in_chroot apt-get -q -y -o Dpkg::Options::=--force-confold full-upgrade >&2
# A kernel update installs a new ABI package beside the old one, and apt's
# autoremove keeps the previous kernel on purpose; an image needs only one.
kernels=$(cd "$rootfs/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V)
release=$(tail -n1 <<<"$kernels")
for old in $(grep -vxF "$release" <<<"$kernels" || true); do
    in_chroot apt-get -q -y purge "linux-image-$old" >&2
done
in_chroot apt-get -q -y --purge autoremove >&2
[ "$(cd "$rootfs/boot" && ls vmlinuz-*)" = "vmlinuz-$release" ] || die "more than one kernel left in /boot"

step "installing $apt_packages"
# shellcheck disable=SC2086 # a list of package names
in_chroot apt-get -q -y --no-install-recommends install $apt_packages >&2

# cloud-init's locale module sets Debian's default, LANG=en_US.UTF-8, with
# update-locale, which refuses a locale that was never generated.
sed -i 's/^# *\(en_US\.UTF-8 UTF-8\)/\1/' "$rootfs/etc/locale.gen"
grep -q '^en_US\.UTF-8 UTF-8' "$rootfs/etc/locale.gen" || echo 'en_US.UTF-8 UTF-8' >> "$rootfs/etc/locale.gen"
in_chroot locale-gen >&2

step "installing botocore $botocore_version from PyPI"
# Into /usr/local, beside Debian's own Python packages (pip refuses to
# touch the system's without --break-system-packages; it only adds here).
# With the build machine's trust store, not the image's: the way out to
# PyPI may pass a proxy whose CA only the build machine knows.
host_ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$host_ca" ] || die "no $host_ca on the build machine (package ca-certificates)"
cp "$host_ca" "$rootfs/tmp/build-ca.crt"
in_chroot pip3 install -q --no-cache-dir --break-system-packages --root-user-action=ignore \
    --cert /tmp/build-ca.crt ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
    "botocore==$botocore_version" >&2
rm -f "$rootfs/tmp/build-ca.crt"
in_chroot python3 -c 'import botocore.utils' || die "botocore does not import"

step "update-initramfs for $release"
in_chroot update-initramfs -u -k "$release" >&2
listing=$(in_chroot lsinitramfs "/boot/initrd.img-$release")
for module in $required_modules; do
    grep -q "/${module}\.ko" <<<"$listing" || die "initramfs lacks $module.ko"
done

step "enabling units"
# The image's own systemctl, run in the chroot where no systemd runs, only
# edits the unit symlinks (and the build machine needs no systemd).
in_chroot systemctl set-default multi-user.target >&2
in_chroot systemctl enable stratus-boot-complete.service stratus-test-hook.service >&2
# Slow or pointless in a short-lived VM: e2scrub (its reaper is one of the
# slowest units at boot), apt's and fstrim's timers, a VT login (the
# console is ttyS0), waiting for network (nothing is configured yet), and
# sshd until networking is (its host keys are made on its first start).
# apparmor.service only loads the few profiles packages ship (dhclient's),
# and took 22 of the 67 s a boot took in the nested virtual host; the
# kernel's AppArmor stays enabled.
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
    apt-daily-upgrade.timer fstrim.timer ssh.service apparmor.service; do
    if [ -n "$(find "$rootfs/lib/systemd/system" -name "$unit")" ]; then
        in_chroot systemctl disable "$unit" >&2
    fi
done
in_chroot systemctl mask getty@tty1.service ifupdown-wait-online.service \
    systemd-networkd-wait-online.service >&2

step "cleaning up"
unmount_all
rm -f "$rootfs/usr/sbin/policy-rc.d"
in_chroot apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# Per-instance identity: an empty machine-id makes systemd treat the first
# boot as first boot (systemd-firstboot semantics) and generate one; host
# keys would otherwise be shared by every instance of the image.
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/etc/ssh/ssh_host_*
# debootstrap copied the build machine's resolver configuration.
: > "$rootfs/etc/resolv.conf"
in_chroot dpkg-query -W -f='${Package} ${Version}\n' > "$out/packages.txt"
if [ -n "$(grep -F " $rootfs/" /proc/self/mounts || true)" ]; then
    die "something is still mounted under $rootfs"
fi

step "making the disk ($disk_mib MiB)"
# GPT, one partition from 1 MiB to 1 MiB before the end (room for the backup
# GPT), typed as the x86-64 root partition so readers can find it by type.
part_mib=$((disk_mib - 2))
raw=$out/disk.raw
part=$out/rootfs.ext4
rm -f "$raw" "$part"
truncate -s "${disk_mib}M" "$raw"
# The GPT's own GUIDs are derived from the filesystem UUID, not random, so
# one set of inputs gives one disk identity.
uuid_from() {
    local h
    h=$(printf '%s' "$1" | sha256sum)
    echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}"
}
sfdisk -q "$raw" <<EOF
label: gpt
label-id: $(uuid_from "$root_uuid/disk")
unit: sectors
start=2048, size=$((part_mib * 2048)), type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=$(uuid_from "$root_uuid/root"), name=root
EOF
# Fixed UUID and hash seed: the same tree gives the same filesystem identity.
mkfs.ext4 -q -F -b 4096 -L rootfs -U "$root_uuid" -E "hash_seed=$root_uuid" \
    -d "$rootfs" "$part" "${part_mib}M"
dd if="$part" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$part"
qemu-img convert -O qcow2 "$raw" "$out/disk.qcow2"
qemu-img check -q "$out/disk.qcow2"

step "writing the manifest"
cat > "$out/manifest.json" <<EOF
{
  "id": "$ami_id",
  "name": "debian-12-stratus",
  "architecture": "x86_64",
  "root_device": { "image": "disk.qcow2", "format": "qcow2" },
  "boot_mode": "direct-kernel-from-disk",
  "kernel_cmdline": "$cmdline"
}
EOF
cat > "$out/info" <<EOF
ami_id=$ami_id
kernel_release=$release
root_uuid=$root_uuid
mirror=$mirror
security_mirror=$security
disk_mib=$disk_mib
kernel_cmdline=$cmdline
botocore_version=$botocore_version
EOF
step "done: $out ($(du -sh --apparent-size "$raw" | cut -f1) raw, $(du -sh "$raw" | cut -f1) allocated; qcow2 $(du -sh "$out/disk.qcow2" | cut -f1))"
