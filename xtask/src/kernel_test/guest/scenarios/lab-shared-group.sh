# lab-shared-group: the two bochs-display functions behind the pcie-pci-bridge share a group;
# each must be moved to vfio-pci separately, and both come back.
. /ktest/lib.sh
A=0000:06:01.0
B=0000:06:02.0
g=$(group_of $A)
na=$(driver_of $A)
nb=$(driver_of $B)
echo "group $g: $(ls /sys/kernel/iommu_groups/$g/devices | tr '\n' ' ')"
[ "$g" != - ] || die "$A has no IOMMU group"
snap 0-before
bind_vfio $A || bad "bind writes for $A failed"
check "$A on vfio-pci" [ "$(driver_of $A)" = vfio-pci ]
check "$B still on $nb (binding one member leaves the other alone)" [ "$(driver_of $B)" = "$nb" ]
check "/dev/vfio/$g exists with one member bound" [ -c /dev/vfio/$g ]
snap 1-a-bound
bind_vfio $B || bad "bind writes for $B failed"
check "$B on vfio-pci" [ "$(driver_of $B)" = vfio-pci ]
snap 2-both-bound
unbind_vfio $A || bad "release writes for $A failed"
check "/dev/vfio/$g stays while $B is still on vfio-pci" [ -c /dev/vfio/$g ]
snap 3-a-released
unbind_vfio $B || bad "release writes for $B failed"
check "$A back on $na" [ "$(driver_of $A)" = "$na" ]
check "$B back on $nb" [ "$(driver_of $B)" = "$nb" ]
snap 4-released
check "/dev/vfio/$g gone" [ ! -e /dev/vfio/$g ]
finish "group $g: both members to vfio-pci and back"
