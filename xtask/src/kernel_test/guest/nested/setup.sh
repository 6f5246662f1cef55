# Sourced by /init (guest/init.sh) of `cargo xtask nested-test`'s L1 guest before
# KTEST-READY: KVM inside TCG, the read-only share with the L2 QEMU, kernel and initramfs,
# and the writable share the artifacts leave through.
for m in kvm_amd 9pnet_virtio 9p; do
  modprobe $m 2> /tmp/modprobe.err || echo "KTEST-SETUP modprobe $m failed: $(cat /tmp/modprobe.err)"
done
[ -c /dev/kvm ] || echo "KTEST-SETUP no /dev/kvm after modprobe kvm_amd"
mkdir -p /opt/l2 /out /run/nested
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro l2 /opt/l2 \
  || echo "KTEST-SETUP mounting the L2 share failed"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /out \
  || echo "KTEST-SETUP mounting the output share failed"
# the L2 QEMU is an extracted package tree: vm-cli finds it on PATH and passes -L for its
# firmware; its libraries come from the tree
export PATH=$PATH:/opt/l2/usr/bin
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/opt/l2/usr/lib/x86_64-linux-gnu:/opt/l2/lib/x86_64-linux-gnu
export XDG_RUNTIME_DIR=/run/nested
# a scenario boots L2 (nested KVM under TCG: ~10 s) up to three times
export KTEST_SCENARIO_TIMEOUT=240
