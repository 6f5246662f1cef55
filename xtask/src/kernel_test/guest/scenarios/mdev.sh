# mdev: vm-cli creates an mbochs, an mdpy and an mtty device (parents that are not PCI
# devices), the vfio_smoke example opens each through its own VFIO group, vm-cli removes them;
# then mdpy is filled (4 devices) and a 5th create is refused: vm-cli exit 3 "no instance
# left", and the kernel itself answers EUSERS. Snapshots for the differential check.
. /ktest/lib.sh
need_vm_cli
export VM_STATE_DIR=/run/vm-device-mdev
M=/sys/bus/mdev/devices
[ -e /sys/class/mdev_bus/mbochs ] || die "no mbochs parent (see the KTEST-SETUP lines)"
[ -z "$(ls $M 2>/dev/null)" ] || die "mdevs already exist: $(ls $M | tr '\n' ' ')"
snap 0-before
n=0
for spec in mbochs:mbochs-small:6b2e6c0e-1d2a-4c3b-8e4f-00000000c001 \
            mdpy:mdpy-vga:6b2e6c0e-1d2a-4c3b-8e4f-00000000c002 \
            mtty:mtty-2:6b2e6c0e-1d2a-4c3b-8e4f-00000000c003; do
  p=${spec%%:*}; rest=${spec#*:}; t=${rest%%:*}; u=${rest#*:}
  cli create-$p gpu mdev-create --mdev-type $t --mdev-uuid $u
  check "gpu mdev-create --mdev-type $t exits 0" [ "$rc" = 0 ]
  check "$u exists on parent $p" [ "$(link_name $M/$u/driver)" = $p ]
  check "$p is not a PCI device (the parent lives under /sys/devices/virtual)" \
    sh -c "readlink -f /sys/class/mdev_bus/$p | grep -q /sys/devices/virtual/"
  g=$(link_name $M/$u/iommu_group)
  check "$u has its own group $g with /dev/vfio/$g" [ "$g" != - -a -c /dev/vfio/$g ]
  echo "mdev $p $t $u group $g"
done
snap 1-created
for spec in mbochs:6b2e6c0e-1d2a-4c3b-8e4f-00000000c001 \
            mdpy:6b2e6c0e-1d2a-4c3b-8e4f-00000000c002 \
            mtty:6b2e6c0e-1d2a-4c3b-8e4f-00000000c003; do
  p=${spec%%:*}; u=${spec#*:}
  g=$(link_name $M/$u/iommu_group)
  smoke vfio-$p $g $u
  check "vfio_smoke $g $u ($p) exits 0" [ "$rc" = 0 ]
  echo "vfio $p vendor=$(json_num $KTEST_ART/vfio-$p.json vendor) device=$(json_num $KTEST_ART/vfio-$p.json device_id) regions=$(grep -c '"index"' $KTEST_ART/vfio-$p.json)"
  cli remove-$p gpu mdev-remove $u
  check "gpu mdev-remove $u ($p) exits 0" [ "$rc" = 0 ]
  check "$u gone, /dev/vfio/$g gone" [ ! -e $M/$u -a ! -e /dev/vfio/$g ]
done
snap 2-removed

# fill mdpy (4 instances shared by its three types), then one more
T=/sys/class/mdev_bus/mdpy/mdev_supported_types/mdpy-xga
adv=$(cat $T/available_instances)
echo "mdpy-xga available_instances=$adv"
i=1
while [ $i -le "$adv" ]; do
  cli fill-$i gpu mdev-create --mdev-type mdpy-xga --mdev-uuid 6b2e6c0e-1d2a-4c3b-8e4f-00000000d00$i
  check "mdpy-xga #$i created" [ "$rc" = 0 ]
  i=$((i + 1))
done
check "mdpy-xga available_instances 0 after $adv creates" [ "$(cat $T/available_instances)" = 0 ]
check "mdpy-vga shares the pool: 0 too" [ "$(cat /sys/class/mdev_bus/mdpy/mdev_supported_types/mdpy-vga/available_instances)" = 0 ]
cli fill-over gpu mdev-create --mdev-type mdpy-xga --mdev-uuid 6b2e6c0e-1d2a-4c3b-8e4f-00000000d009
check "create #$((adv + 1)) refused with exit 3" [ "$rc" = 3 ]
check "the refusal says no instance is left" grep -q "no instance left" "$KTEST_ART/fill-over.err"
echo 6b2e6c0e-1d2a-4c3b-8e4f-00000000d009 > $T/create 2> "$KTEST_ART/kernel-over.err"; krc=$?
echo "kernel: create beyond capacity -> exit $krc: $(cat "$KTEST_ART/kernel-over.err")"
check "the kernel itself refuses a create beyond capacity (EUSERS)" grep -qi "too many users" "$KTEST_ART/kernel-over.err"
check "no device left behind by the refused creates" [ ! -e $M/6b2e6c0e-1d2a-4c3b-8e4f-00000000d009 ]
snap 3-full
i=1
while [ $i -le "$adv" ]; do
  cli unfill-$i gpu mdev-remove 6b2e6c0e-1d2a-4c3b-8e4f-00000000d00$i
  check "mdpy-xga #$i removed" [ "$rc" = 0 ]
  i=$((i + 1))
done
check "mdpy-xga available_instances back to $adv" [ "$(cat $T/available_instances)" = "$adv" ]
check "no mdev left" [ -z "$(ls $M)" ]
snap 4-end
finish "mbochs, mdpy, mtty created, opened through VFIO, removed; mdpy full at $adv"
