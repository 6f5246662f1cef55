# lab-mdev: create and remove an mbochs mediated device through sysfs. Types are listed,
# not guessed (6.1 names them mbochs-small|medium|large).
. /ktest/lib.sh
P=/sys/class/mdev_bus/mbochs
[ -e $P ] || die "no mbochs parent in /sys/class/mdev_bus (see the KTEST-SETUP lines: did modprobe mbochs fail?)"
types=$(ls $P/mdev_supported_types)
echo "mbochs types: $(echo $types)"
t=
for x in $types; do
  [ "$(cat $P/mdev_supported_types/$x/available_instances)" -gt 0 ] && { t=$x; break; }
done
[ -n "$t" ] || die "no mbochs type has an available instance"
T=$P/mdev_supported_types/$t
before=$(cat $T/available_instances)
snap 0-before
U=6b2e6c0e-1d2a-4c3b-8e4f-0000000000a1
echo $U > $T/create || die "create $t ($U) failed"
M=/sys/bus/mdev/devices/$U
check "mdev $U created ($M)" [ -L $M ]
check "mdev_type is $t" [ "$(link_name $M/mdev_type)" = "$t" ]
g=$(link_name $M/iommu_group)
check "mdev has an IOMMU group ($g)" [ "$g" != - ]
check "/dev/vfio/$g appeared" [ -c /dev/vfio/$g ]
check "available_instances $before -> $((before - 1))" [ "$(cat $T/available_instances)" = $((before - 1)) ]
check "listed in the type's devices/" [ -e $T/devices/$U ]
snap 1-created
echo 1 > $M/remove || bad "remove $U failed"
check "mdev $U removed" [ ! -e $M ]
check "/dev/vfio/$g gone" [ ! -e /dev/vfio/$g ]
check "available_instances back to $before" [ "$(cat $T/available_instances)" = "$before" ]
snap 2-removed
finish "mbochs/$t create + remove, group $g"
