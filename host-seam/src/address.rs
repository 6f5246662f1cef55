//! PCI function addresses (`DDDD:BB:DD.F`).

use std::fmt;
use std::str::FromStr;

/// The address of one PCI function: domain, bus, device (slot) and function.
///
/// Domains are 32 bits wide: Linux prints them with at least four hex digits, and hosts with
/// VMD or many host bridges have domains such as `10000` (see hwloc's `2pa-pcidomain32bits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment (domain).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a PCI address ({why}); expected DDDD:BB:DD.F, e.g. 0000:01:00.0")]
pub struct AddressParseError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl PciAddress {
    /// Builds an address, checking the device and function ranges.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// The address of function `function` on the same slot.
    pub fn with_function(self, function: u8) -> Option<Self> {
        Self::new(self.domain, self.bus, self.device, function)
    }

    /// True when both functions sit on the same slot (same domain, bus and device).
    pub fn same_slot(&self, other: &PciAddress) -> bool {
        self.domain == other.domain && self.bus == other.bus && self.device == other.device
    }

    /// `/sys/bus/pci/devices/ADDR`.
    pub fn sysfs_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/sys/bus/pci/devices/{self}"))
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = AddressParseError;

    /// Parses `DDDD:BB:DD.F` (four or more domain digits) or the short `BB:DD.F` (domain 0).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| AddressParseError {
            input: s.to_string(),
            why,
        };
        let (head, func) = s.rsplit_once('.').ok_or_else(|| err("no `.F` function"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(err("expected DDDD:BB:DD")),
        };
        let hex = |t: &str, max_len: usize, what| {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
                Err(err(what))
            } else {
                u32::from_str_radix(t, 16).map_err(|_| err(what))
            }
        };
        let domain = hex(dom, 8, "bad domain")?;
        let bus = hex(bus, 2, "bad bus")? as u8;
        let device = hex(dev, 2, "bad device")?;
        let function = hex(func, 1, "bad function")?;
        if device >= 32 {
            return Err(err("device above 0x1f"));
        }
        if function >= 8 {
            return Err(err("function above 7"));
        }
        Ok(Self {
            domain,
            bus,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl serde::Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_long_domains_and_short_form() {
        let a: PciAddress = "10000:00:02.0".parse().unwrap();
        assert_eq!(a.domain, 0x10000);
        assert_eq!(a.to_string(), "10000:00:02.0");
        let b: PciAddress = "01:00.1".parse().unwrap();
        assert_eq!(b.to_string(), "0000:01:00.1");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "0000:01:00",
            "0000:01:20.0",
            "0000:01:00.8",
            "zz:00.0",
            "0:0:0:0.0",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(d in any::<u32>(), b in any::<u8>(), s in 0u8..32, f in 0u8..8) {
            let a = PciAddress::new(d, b, s, f).unwrap();
            prop_assert_eq!(a.to_string().parse::<PciAddress>().unwrap(), a);
        }
    }
}
