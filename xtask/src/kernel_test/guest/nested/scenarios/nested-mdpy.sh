# vm-cli --gpu-mode mdev --mdev-type mdpy-xga: the mdev created, L2 with display=on, the
# pattern taken through the QMP socket vm-cli opened (screendump of the mdpy display); on
# power-off the mdev is removed and available_instances is back.
. /ktest/lib.sh
. /ktest/nested.sh
need_vm_cli
before=$(avail mdpy mdpy-xga)
snap 0-before
on_line() {
  case "$1" in
    "L2 PAINTED"*)
      echo "mdevs while L2 runs: $(mdevs); mdpy-xga available_instances $(avail mdpy mdpy-xga)"
      qmp "{\"execute\":\"screendump\",\"arguments\":{\"filename\":\"$KTEST_ART/mdpy.ppm\"}}"
      snap 1-running ;;
  esac
}
launch mdpy 2 mdpy-fb 2 on_line --gpu-mode mdev --mdev-type mdpy-xga
check "vm-cli exits 0 after L2 powered off" [ "$rc" = 0 ]
check "the mdev went to L2 with display=on" grep -q 'sysfsdev=/sys/bus/mdev/devices/[-0-9a-f]*,display=on' "$KTEST_ART/mdpy.log"
check "L2 sees the mdpy device 1b36:000f" grep -q '^L2 pci .* id=0x1b36:0x000f ' "$KTEST_ART/mdpy.log"
check "L2's mdpy-fb painted" grep -q '^L2 PAINTED .* driver=mdpy-fb ' "$KTEST_ART/mdpy.log"
check "the QMP screendump was written" [ -s "$KTEST_ART/mdpy.ppm" ]
check "the mdev is gone" [ -z "$(mdevs)" ]
check "mdpy-xga available_instances back to $before" [ "$(avail mdpy mdpy-xga)" = "$before" ]
check "no journal left" [ -z "$(ls /run/vm-device/journal 2> /dev/null)" ]
snap 2-after
finish "mdpy-xga mdev in L2, screendump through vm-cli's QMP socket, removed after"
