# Sourced by the nested-test scenarios after /ktest/lib.sh.
BD=0000:01:00.0                 # L1's bochs-display, the passthrough target
BD2=0000:81:00.0                # a second one behind a pxb-pcie bus on NUMA node 1
L2K=/opt/l2/vmlinuz L2I=/opt/l2/l2-initrd.cpio
# launch NAME SEED DRIVERS HOLD ON_LINE [vm-cli args...]: vm-cli --kernel with the L2 kernel
# and initramfs (256 MiB, one vCPU); every line vm-cli and L2's console print is echoed,
# kept in $KTEST_ART/NAME.log and handed to the function ON_LINE; vm-cli's exit status is
# left in $rc. HOLD=kill drops `quiet` so L2's first kernel line comes early.
launch() {
  local n=$1 seed=$2 drv=$3 hold=$4 on_line=$5 quiet=quiet; shift 5
  [ "$hold" = kill ] && { quiet=; hold=60; }
  echo "vm-cli --kernel L2 $* (L2: l2.drv=$drv l2.seed=$seed)"
  : > "$KTEST_ART/$n.log"
  { vm-cli --kernel $L2K --initrd $L2I --memory 256M --cpus 1 \
      --append "console=ttyS0 $quiet panic=-1 l2.drv=$drv l2.seed=$seed l2.hold=$hold" "$@" \
      < /dev/null 2>&1; echo $? > /tmp/launch.rc; } | while IFS= read -r l; do
    l=${l%$(printf '\r')}
    echo "  $l"
    echo "$l" >> "$KTEST_ART/$n.log"
    $on_line "$l"
  done
  rc=$(cat /tmp/launch.rc 2> /dev/null || echo "?")
  echo "vm-cli exited $rc"
}
ignore() { :; }
# the QMP socket vm-cli opened for the VM it runs (one VM at a time)
vm_qmp() { ls /run/nested/vm-device/vm-*/qmp.sock 2> /dev/null | head -1; }
# qmp JSON...: commands on vm-cli's QMP socket
qmp() {
  local s; s=$(vm_qmp)
  [ -n "$s" ] || { echo "no QMP socket under /run/nested/vm-device"; return 1; }
  nested-helper qmp "$s" "$@" | cut -c1-200
}
# field NAME LINE: the value of NAME=VALUE in LINE
field() { echo "$2" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
avail() { cat /sys/class/mdev_bus/$1/mdev_supported_types/$2/available_instances; }
mdevs() { ls /sys/bus/mdev/devices 2> /dev/null | tr '\n' ' '; }
