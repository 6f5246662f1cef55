# Issue 17: L1 has two NUMA nodes and a second bochs-display behind a pxb-pcie root bus on
# node 1. vm-cli --hugepages 2M --reserve-hugepages --numa auto passes it through: the
# reservation raises node 1's nr_hugepages, L2's RAM takes its pages there (HugePages in use
# on node 1 grow by the guest's 256 MiB = 128 pages), every vCPU thread of L2's QEMU may run
# only on node 1's CPUs and its other threads are off them; after power-off nr_hugepages is
# back and no journal is left.
. /ktest/lib.sh
. /ktest/nested.sh
need_vm_cli
N1=/sys/devices/system/node/node1/hugepages/hugepages-2048kB
check "L1 has two NUMA nodes" [ -d /sys/devices/system/node/node1 ]
check "$BD2 is on node 1" [ "$(cat $(dev $BD2)/numa_node)" = 1 ]
cpus1=$(cat /sys/devices/system/node/node1/cpulist)
nr0=$(cat $N1/nr_hugepages); free0=$(cat $N1/free_hugepages)
echo "node 1: CPUs $cpus1, nr_hugepages $nr0, free_hugepages $free0"
cli numa-plan --kernel $L2K --initrd $L2I --memory 256M --cpus 1 --gpu-mode passthrough \
  --gpu-device $BD2 --hugepages 2M --reserve-hugepages --numa auto --print-cmdline
check "the plan binds memory to node 1" grep -q 'host-nodes=1,policy=bind' "$KTEST_ART/numa-plan.out"
check "the plan reserves node 1's pages" grep -q "node1/hugepages/hugepages-2048kB/nr_hugepages" "$KTEST_ART/numa-plan.out"
# measure: node 1's pool and L2's QEMU threads while L2 runs; the vCPU threads are the
# thread ids QMP query-cpus-fast gives on vm-cli's socket (QEMU 7.2 does not name threads)
measure() {
  out=$KTEST_ART/numa-during.txt
  echo "nr $(cat $N1/nr_hugepages) free $(cat $N1/free_hugepages)" > $out
  vcpus=$(nested-helper qmp "$(vm_qmp)" '{"execute":"query-cpus-fast"}' | grep -o '"thread-id": *[0-9]*' | grep -o '[0-9]*$')
  for c in /proc/[0-9]*/comm; do
    [ "$(cat $c 2> /dev/null)" = qemu-system-x86 ] || continue
    p=${c%/comm}
    for t in $p/task/*; do
      tid=${t##*/}; kind=thread
      for v in $vcpus; do [ "$v" = "$tid" ] && kind=vcpu; done
      echo "$kind $tid $(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' $t/status)" >> $out
    done
  done
  sed 's/^/  during: /' $out
}
on_line() {
  case "$1" in
    "L2 PAINTED"*) measure ;;
  esac
}
launch numa 1 bochs 2 on_line --gpu-mode passthrough --gpu-device $BD2 \
  --hugepages 2M --reserve-hugepages --numa auto
check "vm-cli exits 0 after L2 powered off" [ "$rc" = 0 ]
check "L2's bochs-drm bound $BD2 and L2 painted" grep -q '^L2 PAINTED .* driver=bochs-drm ' "$KTEST_ART/numa.log"
d=$KTEST_ART/numa-during.txt
nr1=$(sed -n 's/^nr \([0-9]*\) free.*/\1/p' $d); free1=$(sed -n 's/^nr [0-9]* free \([0-9]*\)/\1/p' $d)
echo "node 1 while L2 ran: nr_hugepages $nr1, free $free1 (before: $nr0, $free0)"
check "HugePages in use on node 1 grew by the guest's 128 pages" \
  [ "$(( (nr1 - free1) - (nr0 - free0) ))" = 128 ]
check "L2's QEMU had vCPU threads (from QMP query-cpus-fast)" grep -q '^vcpu ' $d
check "every vCPU thread may run only on node 1's CPUs ($cpus1)" \
  sh -c "! grep '^vcpu ' $d | grep -qv ' $cpus1\$'"
check "QEMU's other threads are off node 1's CPUs" \
  sh -c "grep -q '^thread ' $d && ! grep '^thread ' $d | grep -q ' $cpus1\$'"
check "nr_hugepages on node 1 is back to $nr0" [ "$(cat $N1/nr_hugepages)" = "$nr0" ]
check "vm-cli gave everything back" grep -q 'everything given back' "$KTEST_ART/numa.log"
check "$BD2 is back on bochs-drm" [ "$(driver_of $BD2)" = bochs-drm ]
check "no journal left" [ -z "$(ls /run/vm-device/journal 2> /dev/null)" ]
finish "L2 on node 1: 128 hugepages in use there, vCPUs on CPUs $cpus1, nr_hugepages back to $nr0"
