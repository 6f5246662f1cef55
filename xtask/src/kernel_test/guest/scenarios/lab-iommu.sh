# lab-iommu: the emulated Intel IOMMU made the groups the topology implies.
. /ktest/lib.sh
n=$(ls /sys/kernel/iommu_groups | wc -l)
check "iommu groups populated ($n groups)" [ "$n" -gt 0 ]
check "IOMMU unit dmar0 in /sys/class/iommu" [ -e /sys/class/iommu/dmar0 ]
for g in $(ls /sys/kernel/iommu_groups | sort -n); do
  echo "group $g: $(ls /sys/kernel/iommu_groups/$g/devices | tr '\n' ' ')type=$(cat /sys/kernel/iommu_groups/$g/type)"
done
g=$(group_of 0000:06:01.0)
check "06:01.0 and 06:02.0 share group $g" [ "$g" != - -a "$g" = "$(group_of 0000:06:02.0)" ]
check "the pcie-pci-bridge 05:00.0 is in group $g too" [ "$g" = "$(group_of 0000:05:00.0)" ]
s=$(group_of 0000:01:00.0)
check "01:00.0 is alone in group $s" [ "$s" != - -a "$(ls /sys/kernel/iommu_groups/$s/devices 2>/dev/null)" = 0000:01:00.0 ]
check "/dev/vfio/vfio exists" [ -c /dev/vfio/vfio ]
check "boot_vga is 1 on the VGA 02:00.0" [ "$(cat "$(dev 0000:02:00.0)/boot_vga")" = 1 ]
finish "$n groups, shared group $g"
