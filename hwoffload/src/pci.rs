//! PCI addresses as the kernel writes them in sysfs (`0000:03:00.2`) and as Multus / the
//! SR-IOV device plugin pass them to CNI as `deviceID`.

use std::fmt;
use std::str::FromStr;

/// A PCI address `domain:bus:device.function` (`DDDD:BB:DD.F`, hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {value:?}: {reason} (expected DDDD:BB:DD.F, e.g. 0000:03:00.2)")]
pub struct PciAddressError {
    pub value: String,
    pub reason: &'static str,
}

impl FromStr for PciAddress {
    type Err = PciAddressError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| PciAddressError {
            value: value.to_string(),
            reason,
        };
        let (rest, function) = value
            .rsplit_once('.')
            .ok_or_else(|| err("no '.function'"))?;
        let mut parts = rest.split(':');
        let (domain, bus, device) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(b), Some(dev), None) => (Some(d), b, dev),
            // The short form `03:00.2` (lspci without -D) means domain 0.
            (Some(b), Some(dev), None, None) => (None, b, dev),
            _ => return Err(err("wrong number of ':' separated fields")),
        };
        let hex = |s: &str, max_len: usize, what| {
            if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(what));
            }
            u32::from_str_radix(s, 16).map_err(|_| err(what))
        };
        let domain = match domain {
            Some(d) => hex(d, 4, "domain is not 1-4 hex digits")?,
            None => 0,
        };
        let bus = hex(bus, 2, "bus is not 1-2 hex digits")?;
        let device = hex(device, 2, "device is not 1-2 hex digits")?;
        if device > 0x1f {
            return Err(err("device number above 0x1f"));
        }
        if function.len() != 1 {
            return Err(err("function is not a single digit 0-7"));
        }
        let function = hex(function, 1, "function is not a single digit 0-7")?;
        if function > 7 {
            return Err(err("function is not a single digit 0-7"));
        }
        Ok(PciAddress {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_sysfs_form_and_the_short_lspci_form() {
        let a: PciAddress = "0000:03:00.2".parse().unwrap();
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 3, 0, 2));
        assert_eq!(a.to_string(), "0000:03:00.2");
        let b: PciAddress = "af:1f.7".parse().unwrap();
        assert_eq!(b.to_string(), "0000:af:1f.7");
    }

    #[test]
    fn rejects_malformed_addresses_with_the_reason() {
        for bad in [
            "",
            "0000:03:00",
            "0000:03:00.8",
            "0000:03:20.0",
            "x000:03:00.1",
            "0:0:0:0.1",
            "0000:03:00.12",
            "eth0",
        ] {
            let e = bad.parse::<PciAddress>().unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("invalid PCI address"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(domain in 0u32..=0xffff, bus: u8, device in 0u8..=0x1f, function in 0u8..=7) {
            let a = PciAddress { domain, bus, device, function };
            prop_assert_eq!(a.to_string().parse::<PciAddress>().unwrap(), a);
        }

        #[test]
        fn never_panics_on_arbitrary_input(s in ".{0,20}") {
            let _ = s.parse::<PciAddress>();
        }
    }
}
