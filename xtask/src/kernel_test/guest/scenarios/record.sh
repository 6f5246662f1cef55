# record: `vm-cli host record DIR` inside the guest; the tree comes back to the host as an
# artifact (and becomes fixtures/hosts/qemu-q35-viommu-lab with --update-fixtures).
. /ktest/lib.sh
need_vm_cli
pci_facts
out=$KTEST_ART/tree
vm-cli host record "$out" > "$KTEST_ART/stdout" 2> "$KTEST_ART/stderr"; rc=$?
sed 's/^/vm-cli: /' "$KTEST_ART/stdout" "$KTEST_ART/stderr" | head -20
[ "$rc" = 0 ] || die "vm-cli host record exited $rc: $(head -1 "$KTEST_ART/stderr") (wire 'vm-cli host record DIR' to vm_device::recorder::record_host)"
[ -f "$out/proc/modules" ] || die "vm-cli host record exited 0 but wrote no tree at $out (no proc/modules): this vm-cli does not implement 'host record' yet"
check "tree has sys/bus/pci/devices" [ -d "$out/sys/bus/pci/devices" ]
n_sys=$(ls /sys/bus/pci/devices | wc -l)
n_tree=$(ls "$out/sys/bus/pci/devices" | wc -l)
check "tree has $n_tree of the $n_sys PCI functions" [ "$n_sys" = "$n_tree" ]
check "tree has sys/kernel/iommu_groups" [ -d "$out/sys/kernel/iommu_groups" ]
check "tree has the mdev parent mbochs" [ -L "$out/sys/class/mdev_bus/mbochs" ]
check "tree has .fixture/README" [ -s "$out/.fixture/README" ]
check "tree has .fixture/empty-dirs" [ -f "$out/.fixture/empty-dirs" ]
finish "recorded $(find "$out" | wc -l) entries"
