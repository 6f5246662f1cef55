# Sourced by every kernel-test scenario (busybox ash). The verdict goes to $KTEST_RESULT;
# /init prints it as `KTEST NAME PASS|FAIL DETAIL`. Lines printed here reach the host as
# `KTEST-OUT NAME LINE`; a scenario's `expect` entries are matched against them.
FAILS=0
ok()   { echo "ok $*"; }
bad()  { echo "not ok $*"; FAILS=$((FAILS + 1)); }
# check DESCRIPTION COMMAND...: run COMMAND, report ok/not ok
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
die()  { echo "not ok $*"; echo "FAIL $*" > "$KTEST_RESULT"; exit 1; }
# finish DETAIL: PASS when no check failed
finish() {
  if [ "$FAILS" = 0 ]; then echo "PASS $*" > "$KTEST_RESULT"; exit 0; fi
  echo "FAIL $FAILS check(s) failed (see the 'not ok' lines); $*" > "$KTEST_RESULT"; exit 1
}

dev() { echo /sys/bus/pci/devices/$1; }
link_name() { [ -L "$1" ] && basename "$(readlink "$1")" || echo -; }
driver_of() { link_name "$(dev $1)/driver"; }
group_of() { link_name "$(dev $1)/iommu_group"; }
# one `fact` line per PCI function, read straight from sysfs: the ground truth the host
# compares vm-cli's output and recorded trees with
pci_facts() {
  for d in /sys/bus/pci/devices/*; do
    echo "fact ${d##*/} vendor=$(cat $d/vendor) device=$(cat $d/device) class=$(cat $d/class) driver=$(link_name $d/driver) iommu_group=$(link_name $d/iommu_group)"
  done
}
# driver_override + unbind + drivers_probe, as a manager binds a function to vfio-pci
bind_vfio() {
  echo vfio-pci > "$(dev $1)/driver_override" || return 1
  if [ -L "$(dev $1)/driver" ]; then echo $1 > "$(dev $1)/driver/unbind" || return 1; fi
  echo $1 > /sys/bus/pci/drivers_probe
}
# clear the override, unbind, reprobe: back to the native driver
unbind_vfio() {
  echo > "$(dev $1)/driver_override" || return 1
  if [ -L "$(dev $1)/driver" ]; then echo $1 > "$(dev $1)/driver/unbind" || return 1; fi
  echo $1 > /sys/bus/pci/drivers_probe
}
# vm-cli present and runnable (its shared libraries and loader were packed with it)?
need_vm_cli() {
  command -v vm-cli > /dev/null || die "vm-cli is not in the initramfs"
}
