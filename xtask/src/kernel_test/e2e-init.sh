#!/bin/busybox sh
# /init of the `cargo xtask e2e` guest: bring up virtio-gpu, draw /pattern.bin on /dev/fb0
# with one write() of the whole frame, and let the host take a screendump.
# Lines starting with "E2E " are for the host (xtask/src/kernel_test/e2e.rs).
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
if [ ! -c /dev/fb0 ]; then
    echo "E2E fail no /dev/fb0 after 60 s; virtio devices: $(ls /sys/bus/virtio/devices)"
    poweroff -f
fi
echo "E2E uptime $(cut -d' ' -f1 /proc/uptime) fb0 $(cat /sys/class/graphics/fb0/virtual_size) stride $(cat /sys/class/graphics/fb0/stride)"
# No blinking cursor or console text on top of the pattern.
echo 0 > /sys/class/graphics/fbcon/cursor_blink
printf '\033[?25l' > /dev/tty1
size=$(wc -c < /pattern.bin)
fbsize=$(cat /sys/class/graphics/fb0/virtual_size)
# One write() for the whole frame: a one-line write gives 6.1's fbdev an empty damage clip.
dd if=/pattern.bin of=/dev/fb0 bs="$size" count=1 2>/dev/null
# fbdev flushes from a worker: let it run before the host looks.
sleep 0.5
echo "E2E shot fb0-pattern"
read -t 120 go
# WebGPU through the same device: the facts the guest kernel sees, then a compute program
# built from the workspace (guest/examples/vm_compute.rs) using wgpu through webgpu-guest.
mount -t debugfs none /sys/kernel/debug 2>/dev/null
echo "E2E facts features: $(grep -h . /sys/kernel/debug/dri/0/virtio-gpu-features 2>/dev/null | tr -s ' \n' ' ')| /dev/dri: $(ls /dev/dri 2>/dev/null | tr '\n' ' ')"
if [ -x /vm_compute ]; then
    /vm_compute 65536
    # A frame computed on the host's adapter, read back and shown on fb0 (the 2D path).
    if /vm_compute frame "${fbsize%,*}" "${fbsize#*,}" /dev/fb0; then
        sleep 0.5
        echo "E2E shot webgpu-frame"
        read -t 120 go
    fi
fi
echo "E2E done"
poweroff -f
