# crash-restore: `vm-cli gpu prepare` of the shared group 11, slowed down with
# VM_DEVICE_STEP_DELAY_MS, is killed with SIGKILL after its 4th host change (06:02.0 moved,
# 06:01.0 unbound); `vm-cli gpu restore` then leaves every driver link and driver_override
# as they were. Snapshots (before, killed, restored) for the differential check.
. /ktest/lib.sh
need_vm_cli
export VM_STATE_DIR=/run/vm-device-crash
S1=0000:06:01.0
S2=0000:06:02.0
listing() {
  for d in /sys/bus/pci/devices/*; do
    echo "${d##*/} driver=$(link_name $d/driver) override=$(cat $d/driver_override 2>/dev/null || echo -)"
  done
  echo "dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"
}
listing > "$KTEST_ART/before.txt"
[ "$(driver_of $S1)" != vfio-pci ] || die "$S1 already on vfio-pci: an earlier scenario left it there"
snap 0-before
VM_DEVICE_STEP_DELAY_MS=1000 vm-cli gpu prepare $S1 > "$KTEST_ART/prepare.out" 2> "$KTEST_ART/prepare.err" &
pid=$!
i=0
while [ $i -lt 200 ]; do
  [ "$(driver_of $S2)" = vfio-pci ] && [ "$(driver_of $S1)" = - ] && break
  sleep 0.05; i=$((i + 1))
done
kill -9 $pid
wait $pid; rc=$?
echo "vm-cli gpu prepare $S1 (pid $pid) killed: exit $rc after $i polls"
check "vm-cli died of SIGKILL (exit 137)" [ "$rc" = 137 ]
check "killed mid-way: $S2 on vfio-pci" [ "$(driver_of $S2)" = vfio-pci ]
check "killed mid-way: $S1 unbound" [ "$(driver_of $S1)" = - ]
check "killed mid-way: $S1 has no override yet" [ "$(cat "$(dev $S1)/driver_override")" = "(null)" ]
j=$(ls $VM_STATE_DIR/journal/*.json 2>/dev/null | head -1)
check "the killed prepare left its journal ($j)" [ -n "$j" ]
[ -n "$j" ] && cp "$j" "$KTEST_ART/journal.json"
listing > "$KTEST_ART/killed.txt"
snap 1-killed
cli list gpu list
cli restore gpu restore
check "gpu restore exits 0" [ "$rc" = 0 ]
listing > "$KTEST_ART/after.txt"
if cmp -s "$KTEST_ART/before.txt" "$KTEST_ART/after.txt"; then
  ok "driver links, driver_override and /dev/vfio after restore equal the listing before ($(wc -l < "$KTEST_ART/before.txt") lines)"
else
  bad "listing after restore differs from before:"; diff "$KTEST_ART/before.txt" "$KTEST_ART/after.txt"
fi
check "no journal left" [ -z "$(ls $VM_STATE_DIR/journal/ 2>/dev/null)" ]
snap 2-restored
finish "killed after the 4th change, restored"
