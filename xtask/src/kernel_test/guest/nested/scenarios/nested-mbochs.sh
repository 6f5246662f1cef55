# vm-cli --gpu-mode mdev --mdev-type mbochs-small: L2's bochs-drm paints the mbochs device;
# its framebuffer is read back from the BAR through vm-cli's QMP socket (pmemsave at BAR0:
# the mbochs display is a dma-buf one, which needs OpenGL for a screendump).
. /ktest/lib.sh
. /ktest/nested.sh
need_vm_cli
before=$(avail mbochs mbochs-small)
snap 0-before
on_line() {
  case "$1" in
    "L2 PAINTED"*)
      wh=$(echo "$1" | sed -n 's/^L2 PAINTED fb0 \([0-9]*x[0-9]*\) .*/\1/p')
      bar0=$(field bar0 "$1"); size=$(( ${wh%x*} * ${wh#*x} * 4 ))
      echo "mdevs while L2 runs: $(mdevs); BAR0 $bar0, $size bytes"
      qmp "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":$((bar0)),\"size\":$size,\"filename\":\"$KTEST_ART/mbochs-bar0.bin\"}}"
      snap 1-running ;;
  esac
}
launch mbochs 3 bochs 2 on_line --gpu-mode mdev --mdev-type mbochs-small
check "vm-cli exits 0 after L2 powered off" [ "$rc" = 0 ]
check "L2 sees the mbochs device 1234:1111" grep -q '^L2 pci .* id=0x1234:0x1111 ' "$KTEST_ART/mbochs.log"
check "L2's bochs-drm painted it" grep -q '^L2 PAINTED .* driver=bochs-drm ' "$KTEST_ART/mbochs.log"
check "the BAR was saved" [ -s "$KTEST_ART/mbochs-bar0.bin" ]
check "the mdev is gone" [ -z "$(mdevs)" ]
check "mbochs-small available_instances back to $before" [ "$(avail mbochs mbochs-small)" = "$before" ]
check "no journal left" [ -z "$(ls /run/vm-device/journal 2> /dev/null)" ]
snap 2-after
finish "mbochs-small mdev in L2, framebuffer read through its BAR"
