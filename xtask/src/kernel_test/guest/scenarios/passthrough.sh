# passthrough: `vm-cli gpu prepare` moves 01:00.0 to vfio-pci, the vfio_smoke example opens it
# through VFIO (container, group, device, regions, config read, DMA map/unmap), `gpu release`
# gives it back; preparing one member of the shared group 11 moves both; the boot VGA is
# refused (exit 3) without --allow-boot-vga. Snapshots for the differential check.
. /ktest/lib.sh
need_vm_cli
export VM_STATE_DIR=/run/vm-device-passthrough
A=0000:01:00.0
S1=0000:06:01.0
S2=0000:06:02.0
V=0000:02:00.0
na=$(driver_of $A); ga=$(group_of $A)
ns1=$(driver_of $S1); ns2=$(driver_of $S2); gs=$(group_of $S1)
nv=$(driver_of $V)
echo "before: $A=$na (group $ga) $S1=$ns1 $S2=$ns2 (group $gs) $V=$nv"
[ "$ga" != - ] || die "$A has no IOMMU group (IOMMU off?)"
[ "$na" != vfio-pci ] || die "$A is already on vfio-pci: an earlier scenario left it there"
snap 0-before

cli prepare-a gpu prepare $A
check "gpu prepare $A exits 0" [ "$rc" = 0 ]
check "$A on vfio-pci after prepare" [ "$(driver_of $A)" = vfio-pci ]
check "/dev/vfio/$ga exists after prepare" [ -c /dev/vfio/$ga ]
check "a journal under $VM_STATE_DIR names the prepared group" [ -n "$(ls $VM_STATE_DIR 2>/dev/null)" ]
snap 1-prepared
smoke vfio-a $ga $A
check "vfio_smoke $ga $A exits 0" [ "$rc" = 0 ]
check "config read through VFIO: vendor 0x1234 (4660)" [ "$(json_num $KTEST_ART/vfio-a.json vendor)" = 4660 ]
check "config read through VFIO: device 0x1111 (4369)" [ "$(json_num $KTEST_ART/vfio-a.json device_id)" = 4369 ]
check "DMA map/unmap released 1 MiB" [ "$(json_num $KTEST_ART/vfio-a.json dma_unmapped)" = 1048576 ]
cli release-a gpu release $A
check "gpu release $A exits 0" [ "$rc" = 0 ]
check "$A back on $na after release" [ "$(driver_of $A)" = "$na" ]
check "driver_override of $A reads (null)" [ "$(cat "$(dev $A)/driver_override")" = "(null)" ]
check "/dev/vfio/$ga gone after release" [ ! -e /dev/vfio/$ga ]
snap 2-released

# shared group: preparing one member moves every member (the bridge stays driverless)
cli prepare-shared gpu prepare $S1
check "gpu prepare $S1 exits 0" [ "$rc" = 0 ]
check "$S1 on vfio-pci" [ "$(driver_of $S1)" = vfio-pci ]
check "$S2 (same group $gs) moved with it to vfio-pci" [ "$(driver_of $S2)" = vfio-pci ]
snap 3-shared-prepared
smoke vfio-shared $gs $S1
check "vfio_smoke $gs $S1 exits 0 (the group is viable)" [ "$rc" = 0 ]
cli release-shared gpu release $S1
check "gpu release $S1 exits 0" [ "$rc" = 0 ]
check "$S1 back on $ns1" [ "$(driver_of $S1)" = "$ns1" ]
check "$S2 back on $ns2" [ "$(driver_of $S2)" = "$ns2" ]
check "/dev/vfio/$gs gone" [ ! -e /dev/vfio/$gs ]

# the boot display
cli prepare-vga gpu prepare $V
check "gpu prepare $V (boot VGA) refused with exit 3" [ "$rc" = 3 ]
check "the refusal names the boot display" grep -q "boot display" "$KTEST_ART/prepare-vga.err"
check "$V still on $nv" [ "$(driver_of $V)" = "$nv" ]
cli prepare-vga-dry gpu prepare $V --dry-run --allow-boot-vga
check "with --allow-boot-vga the plan is accepted (--dry-run, exit 0)" [ "$rc" = 0 ]
check "$V still on $nv after the dry run" [ "$(driver_of $V)" = "$nv" ]
snap 4-end
finish "$A bochs -> vfio-pci -> VFIO -> $(driver_of $A); group $gs moved as one; boot VGA refused"
