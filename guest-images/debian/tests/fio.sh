#!/bin/sh
# Disk benchmark: sequential 1 MiB read/write, random 4 KiB read/write at
# iodepth 1 and 32, libaio with O_DIRECT, each job time-limited so the whole
# run stays well under a minute even under nested virtualization.
#
# Target: /dev/vdb when the VM has a second disk (it is overwritten!), else
# a file on the root filesystem. stratus.fio_runtime=SECONDS (default 3) and
# stratus.fio_size=SIZE (default 128M) tune it. Each job's result is one
# fio terse (v3) line, printed as "FIO: <line>".
set -e
runtime=${STRATUS_FIO_RUNTIME:-3}
size=${STRATUS_FIO_SIZE:-128M}
if [ -b /dev/vdb ]; then
    target=/dev/vdb
else
    target=/var/tmp/stratus-fio.dat
    # Lay the file out first so the read jobs read real blocks, not holes.
    fio --name=layout --filename="$target" --size="$size" --rw=write --bs=1M \
        --direct=1 --ioengine=libaio --output=/dev/null
fi
echo "FIO-TARGET $target size=$size runtime=${runtime}s"
run() {
    name=$1
    shift
    fio --name="$name" --filename="$target" --size="$size" --direct=1 \
        --ioengine=libaio --time_based --runtime="$runtime" --ramp_time=0 \
        --output-format=terse --terse-version=3 "$@" | sed 's/^/FIO: /'
}
run seq-read-1m --rw=read --bs=1M --iodepth=32
run seq-write-1m --rw=write --bs=1M --iodepth=32
run rand-read-4k-qd1 --rw=randread --bs=4k --iodepth=1
run rand-read-4k-qd32 --rw=randread --bs=4k --iodepth=32
run rand-write-4k-qd1 --rw=randwrite --bs=4k --iodepth=1
run rand-write-4k-qd32 --rw=randwrite --bs=4k --iodepth=32
if [ "$target" != /dev/vdb ]; then
    rm -f "$target"
fi
