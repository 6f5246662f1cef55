#!/bin/busybox sh
# /init of the L2 guest of `cargo xtask nested-test` (started by vm-cli inside L1 under KVM).
# Kernel arguments: l2.drv=MOD[,MOD] (display drivers to load), l2.seed=N (which pattern),
# l2.hold=S (seconds to keep the pattern on screen). Lines for the harness start with "L2 ":
#   L2 up uptime=S                     /init started
#   L2 pci ADDR id=V:D class=C driver=X bar0=A   each display function the guest sees
#   L2 PAINTED fb0 WxH seed=N pci=ADDR id=V:D driver=X bar0=A
#   L2 FAIL WHY                        nothing was painted
# The pattern: /stream.bin holds XRGB8888 pixels p(i) (xtask/src/kernel_test/nested.rs,
# `pattern_pixel`); a W x H frame of seed N is the W*H pixels from pixel N*SEED_STRIDE on,
# so the harness knows every pixel of any mode the driver picked.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
SEED_KIB=64  # = SEED_KIB in xtask/src/kernel_test/nested.rs
up() { read -r u _ < /proc/uptime; echo "$u"; }
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
echo "L2 up uptime=$(up)"
fail() { echo "L2 FAIL $*"; echo "L2 end"; poweroff -f; }
for m in $(arg l2.drv | tr , ' '); do
  modprobe "$m" 2> /tmp/err || echo "L2 modprobe $m failed: $(cat /tmp/err)"
done
for d in /sys/bus/pci/devices/*; do
  case $(cat "$d/class") in 0x03*) ;; *) continue ;; esac
  drv=-; [ -L "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
  echo "L2 pci ${d##*/} id=$(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") driver=$drv bar0=$(head -1 "$d/resource" | cut -d' ' -f1)"
done
i=0
while [ ! -e /sys/class/graphics/fb0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /sys/class/graphics/fb0 ] || fail "no /dev/fb0 after 10 s"
f=/sys/class/graphics/fb0
W=$(cut -d, -f1 $f/virtual_size); H=$(cut -d, -f2 $f/virtual_size); S=$(cat $f/stride)
[ "$S" = $((W * 4)) ] || fail "fb0 stride $S is not 4 x width $W (not 32 bpp?)"
size=$((W * H * 4))
[ $((size % 1024)) = 0 ] || fail "fb0 ${W}x${H}: the frame is not a whole number of KiB"
# no console on top of the pattern: fbcon lets go of the framebuffer, no cursor
echo 0 > /sys/class/graphics/fbcon/cursor_blink 2> /dev/null
for v in /sys/class/vtconsole/vtcon*; do
  grep -q "frame buffer" "$v/name" 2> /dev/null && echo 0 > "$v/bind"
done
nested-helper fbforce /dev/fb0 | sed 's/^/L2 /'
seed=$(arg l2.seed)
dd if=/stream.bin of=/tmp/frame bs=1024 skip=$((seed * SEED_KIB)) count=$((size / 1024)) 2> /dev/null
[ "$(wc -c < /tmp/frame)" = $size ] || fail "stream.bin is too short for seed $seed at ${W}x${H}"
# one write() for the whole frame (fbdev's damage clip of smaller writes can be empty)
dd if=/tmp/frame of=/dev/fb0 bs=$size count=1 2> /dev/null || fail "writing /dev/fb0 failed"
pci=$(basename "$(readlink -f $f/device)"); d=/sys/bus/pci/devices/$pci
drv=-; [ -L "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
sleep 0.3
echo "L2 PAINTED fb0 ${W}x${H} seed=$seed pci=$pci id=$(cat $d/vendor):$(cat $d/device) driver=$drv bar0=$(head -1 $d/resource | cut -d' ' -f1) uptime=$(up)"
# (the line before an idle sleep reaches the host only with the next one)
echo "L2 holding $(arg l2.hold)s"
sleep "$(arg l2.hold)"
echo "L2 end uptime=$(up)"
poweroff -f
