#!/bin/busybox sh
# /init of the `cargo xtask bench-display` guest: bring up virtio-gpu, then run
# /bin/displaybench for bench_secs= (kernel command line) seconds per phase and power off.
# Lines starting with "BENCH " are for the host (xtask/src/kernel_test/bench_display.rs).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
modprobe virtio_pci
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/modalias" ] && modprobe "$(cat "$d/modalias")"
done
i=0
while [ ! -c /dev/fb0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -c /dev/fb0 ] || [ ! -c /dev/dri/card0 ]; then
    echo "BENCH fail no /dev/fb0 or /dev/dri/card0 after 60 s; virtio devices: $(ls /sys/bus/virtio/devices)"
    poweroff -f
fi
secs=$(sed -n 's/.*bench_secs=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
echo "BENCH start uptime $(cut -d' ' -f1 /proc/uptime) fb0 $(cat /sys/class/graphics/fb0/virtual_size) secs ${secs:-5}"
/bin/displaybench "${secs:-5}"
poweroff -f
