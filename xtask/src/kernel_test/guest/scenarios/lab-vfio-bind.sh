# lab-vfio-bind: driver_override + unbind + drivers_probe moves 01:00.0 to vfio-pci and
# /dev/vfio/N appears; clearing the override and reprobing gives it back.
. /ktest/lib.sh
A=0000:01:00.0
native=$(driver_of $A)
g=$(group_of $A)
echo "before: $A driver=$native group=$g"
[ "$g" != - ] || die "$A has no IOMMU group (IOMMU off?)"
[ "$native" != vfio-pci ] || die "$A is already on vfio-pci: an earlier scenario left it there"
check "/dev/vfio/$g absent before the bind" [ ! -e /dev/vfio/$g ]
snap 0-before
bind_vfio $A || bad "bind writes for $A failed"
check "$A bound to vfio-pci" [ "$(driver_of $A)" = vfio-pci ]
check "driver_override reads vfio-pci" [ "$(cat "$(dev $A)/driver_override")" = vfio-pci ]
check "drivers/vfio-pci/$A link" [ -L /sys/bus/pci/drivers/vfio-pci/$A ]
check "/dev/vfio/$g appeared" [ -c /dev/vfio/$g ]
snap 1-bound
unbind_vfio $A || bad "release writes for $A failed"
check "$A back on $native" [ "$(driver_of $A)" = "$native" ]
check "driver_override reads (null)" [ "$(cat "$(dev $A)/driver_override")" = "(null)" ]
check "/dev/vfio/$g gone after the release" [ ! -e /dev/vfio/$g ]
snap 2-released
finish "$A $native -> vfio-pci -> $(driver_of $A), /dev/vfio/$g came and went"
