# kill -9 of vm-cli while L2 runs (a passthrough launch, then an mdev launch): QEMU must
# not keep the devices (stopped here if it outlived vm-cli), and `vm-cli gpu restore`
# gives 0000:01:00.0 back and removes the mdev.
. /ktest/lib.sh
. /ktest/nested.sh
need_vm_cli
before=$(avail mdpy mdpy-xga)
snap 0-before
on_line() {
  case "$1" in
    *"Linux version"*)
      p=$(pidof vm-cli); echo "L2 runs: kill -9 vm-cli ($p)"; kill -9 $p
      sleep 1
      q=$(pidof qemu-system-x86_64)
      if [ -n "$q" ]; then
        echo "QEMU $q outlived vm-cli: stopping it (SIGTERM)"; kill $q
      else
        echo "QEMU went with vm-cli"
      fi ;;
  esac
}
launch kill-pt 4 bochs kill on_line --gpu-mode passthrough --gpu-device $BD
check "vm-cli was killed (exit 137)" [ "$rc" = 137 ]
launch kill-mdpy 4 mdpy-fb kill on_line --gpu-mode mdev --mdev-type mdpy-xga
check "vm-cli was killed (exit 137)" [ "$rc" = 137 ]
i=0; while pidof qemu-system-x86_64 > /dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
check "no QEMU left" [ -z "$(pidof qemu-system-x86_64)" ]
check "$BD is still on vfio-pci" [ "$(driver_of $BD)" = vfio-pci ]
check "the mdev is still there" [ -n "$(mdevs)" ]
check "both launches left their journal for gpu restore" [ "$(ls /run/vm-device/journal | wc -l)" = 2 ]
snap 1-killed
cli restore gpu restore
check "vm-cli gpu restore exits 0" [ "$rc" = 0 ]
check "$BD is back on bochs-drm" [ "$(driver_of $BD)" = bochs-drm ]
check "$BD driver_override restored" [ "$(cat $(dev $BD)/driver_override)" = "(null)" ]
check "the mdev is gone" [ -z "$(mdevs)" ]
check "mdpy-xga available_instances back to $before" [ "$(avail mdpy mdpy-xga)" = "$before" ]
check "no journal left" [ -z "$(ls /run/vm-device/journal 2> /dev/null)" ]
snap 2-restored
finish "two launches killed with -9; gpu restore gave $BD back and removed the mdev"
