# vm-cli --gpu-mode passthrough --gpu-device 0000:01:00.0: L2 under KVM with L1's
# bochs-display; the host compares L0's screendump of that display with L2's pattern.
. /ktest/lib.sh
. /ktest/nested.sh
need_vm_cli
snap 0-before
on_line() {
  case "$1" in
    "L2 PAINTED"*) echo "NESTED-SHOT l0-bd1"; snap 1-running ;;
  esac
}
launch pt 1 bochs 2 on_line --gpu-mode passthrough --gpu-device $BD
check "vm-cli exits 0 after L2 powered off" [ "$rc" = 0 ]
check "vm-cli started L2 under KVM" grep -q 'starting .* -accel kvm ' "$KTEST_ART/pt.log"
check "L2 sees $BD as 1234:1111" grep -q '^L2 pci .* id=0x1234:0x1111 ' "$KTEST_ART/pt.log"
check "L2's bochs-drm bound it and L2 painted" grep -q '^L2 PAINTED .* driver=bochs-drm ' "$KTEST_ART/pt.log"
check "vm-cli gave everything back" grep -q 'everything given back' "$KTEST_ART/pt.log"
check "$BD is back on bochs-drm" [ "$(driver_of $BD)" = bochs-drm ]
check "$BD driver_override restored" [ "$(cat $(dev $BD)/driver_override)" = "(null)" ]
check "no journal left" [ -z "$(ls /run/vm-device/journal 2> /dev/null)" ]
snap 2-after
finish "L2 under KVM with $BD passed through; back on bochs-drm"
