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
# snap NAME: record the host tree as the artifact trees/NAME (`vm-cli host record`). The
# differential host check replays the scenario on the simulator from the first snapshot and
# compares driver links, overrides, mdevs, available_instances, groups and /dev/vfio at each.
snap() {
  mkdir -p "$KTEST_ART/trees"
  if vm-cli host record "$KTEST_ART/trees/$1" > /dev/null 2> "$KTEST_ART/record-$1.err"; then
    echo "snapshot $1"
  else
    bad "vm-cli host record (snapshot $1) failed: $(head -1 "$KTEST_ART/record-$1.err")"
  fi
}
# cli NAME ARGS...: run `vm-cli ARGS`, keep stdout/stderr as artifacts NAME.out/NAME.err,
# echo them (prefixed) and the exit status; the status is left in $rc
cli() {
  local n=$1; shift
  vm-cli "$@" > "$KTEST_ART/$n.out" 2> "$KTEST_ART/$n.err"; rc=$?
  sed "s/^/  $n: /" "$KTEST_ART/$n.out" "$KTEST_ART/$n.err" | head -30
  echo "vm-cli $* -> exit $rc"
}
# smoke NAME GROUP DEVICE: the vfio_smoke example (whole VFIO open sequence) on DEVICE of
# GROUP; the JSON report is the artifact NAME.json; the status is left in $rc
smoke() {
  vfio_smoke "$2" "$3" legacy > "$KTEST_ART/$1.json" 2> "$KTEST_ART/$1.err"; rc=$?
  sed "s/^/  vfio_smoke: /" "$KTEST_ART/$1.err" | head -10
  echo "vfio_smoke $2 $3 -> exit $rc"
}
# json_num FILE KEY: the first number value of "KEY" in a pretty-printed JSON file
json_num() { sed -n "s/^ *\"$2\": \([0-9][0-9]*\),*$/\1/p" "$1" | head -1; }
