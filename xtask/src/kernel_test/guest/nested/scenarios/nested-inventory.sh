# vm-cli's view of L1: the bochs-display is a passthrough candidate, the sample mdev types
# are listed, /dev/kvm is usable (kvm.device) and KVM_CREATE_VM succeeds (the launch plan
# picks KVM), and the plans carry the device options a real L2 then gets.
. /ktest/lib.sh
. /ktest/nested.sh
need_vm_cli
check "kvm_amd loaded: /dev/kvm is there" [ -c /dev/kvm ]
cli list gpu list
check "gpu list exits 0" [ "$rc" = 0 ]
check "gpu list: $BD is an available passthrough candidate" \
  sh -c "awk '/passthrough GPU $BD\$/ { getline; print }' $KTEST_ART/list.out | grep -q '^ *available'"
for t in mbochs-small mdpy-xga; do
  check "gpu list: mdev type $t listed" grep -q " $t " "$KTEST_ART/list.out"
done
cli doctor gpu doctor
check "gpu doctor: kvm.device ok" grep -q '^ *ok *kvm.device' "$KTEST_ART/doctor.out"
check "gpu doctor: vfio.container ok" grep -q '^ *ok *vfio.container' "$KTEST_ART/doctor.out"
cli plan-pt --kernel $L2K --initrd $L2I --gpu-mode passthrough --gpu-device $BD --print-cmdline
check "passthrough plan exits 0" [ "$rc" = 0 ]
check "the launch picks KVM after a real KVM_CREATE_VM" grep -q '^Accelerator: kvm (.*KVM_CREATE_VM succeeds' "$KTEST_ART/plan-pt.out"
check "the command line passes $BD through" grep -q "vfio-pci,host=$BD" "$KTEST_ART/plan-pt.out"
cli plan-mdpy --kernel $L2K --initrd $L2I --gpu-mode mdev --mdev-type mdpy-xga --print-cmdline
check "mdpy plan: display=on (a region display)" grep -q 'sysfsdev=/sys/bus/mdev/devices/.*,display=on' "$KTEST_ART/plan-mdpy.out"
cli plan-mbochs --kernel $L2K --initrd $L2I --gpu-mode mdev --mdev-type mbochs-small --print-cmdline
check "mbochs plan: display=off (a dma-buf display needs OpenGL, vm-cli runs -display none)" \
  grep -q 'sysfsdev=/sys/bus/mdev/devices/.*,display=off' "$KTEST_ART/plan-mbochs.out"
check "no VM was left behind" [ -z "$(mdevs)" ]
echo "wgpu rung: $(grep -i -A1 'wgpu' "$KTEST_ART/list.out" | tr -s ' ' | head -3 | tr '\n' ' ')"
finish "$BD passthrough candidate, mdev types listed, kvm.device ok, KVM_CREATE_VM ok"
