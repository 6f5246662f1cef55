# gpu-list: `vm-cli gpu list --json` against sysfs. The guest prints the sysfs facts and
# ships the JSON; the host compares them (kernel_test::scenarios::check_gpu_list).
. /ktest/lib.sh
need_vm_cli
pci_facts
vm-cli gpu list --json > "$KTEST_ART/gpus.json" 2> "$KTEST_ART/stderr"; rc=$?
sed 's/^/vm-cli stderr: /' "$KTEST_ART/stderr" | head -20
[ "$rc" = 0 ] || die "vm-cli gpu list --json exited $rc: $(head -1 "$KTEST_ART/stderr")"
[ -s "$KTEST_ART/gpus.json" ] || die "vm-cli gpu list --json exited 0 and printed nothing: this vm-cli does not implement 'gpu list' yet"
snap tree
ok "vm-cli gpu list --json printed $(wc -c < "$KTEST_ART/gpus.json") bytes"
finish "JSON shipped to the host for the comparison with the fact lines"
