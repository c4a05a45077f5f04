//! `phys_port_name` of switchdev ports, as the kernel formats it.
//!
//! devlink (net/devlink/port.c) names ports by flavour: physical `p<port>` (split:
//! `p<port>s<sub>`), PCI PF `pf<pf>`, PCI VF `pf<pf>vf<vf>`, PCI SF `pf<pf>sf<sf>`, and prefixes
//! `c<controller>` for ports of an external controller (SmartNIC host side). mlx5 before
//! devlink ports (kernels up to ~5.1) wrote only the VF index (`vport - 1`) for VF
//! representors, e.g. `3`, and nothing (EOPNOTSUPP) for the uplink.

use std::fmt;
use std::str::FromStr;

/// A parsed `phys_port_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortName {
    /// The physical port (in switchdev mode the PF netdev is the uplink representor): `p0`.
    Uplink { port: u32, split: Option<u32> },
    /// Representor of a PF (SmartNIC / external controller host PF): `pf0`, `c1pf0`.
    PfRepresentor { controller: Option<u32>, pf: u32 },
    /// Representor of a VF: `pf0vf3`, `c1pf0vf3`, or the legacy mlx5 form `3` (no PF number).
    VfRepresentor {
        controller: Option<u32>,
        pf: Option<u32>,
        vf: u32,
    },
    /// Representor of a sub-function: `pf0sf88`, `c1pf0sf88`.
    SfRepresentor {
        controller: Option<u32>,
        pf: u32,
        sf: u32,
    },
}

/// Why a `phys_port_name` could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unrecognised phys_port_name {value:?}: expected p<N>, p<N>s<M>, pf<N>, pf<N>vf<M>, pf<N>sf<M> \
     (optionally prefixed c<K>) or a bare VF index"
)]
pub struct PortNameError {
    pub value: String,
}

/// Splits a leading decimal number off `s` (no sign, no empty number, fits u32).
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    let n = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

fn number_then<'a>(s: &'a str, prefix: &str) -> Option<(u32, &'a str)> {
    leading_number(s.strip_prefix(prefix)?)
}

impl FromStr for PortName {
    type Err = PortNameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse(value).ok_or_else(|| PortNameError {
            value: value.to_string(),
        })
    }
}

fn parse(s: &str) -> Option<PortName> {
    // Legacy mlx5 VF representor: only the VF index.
    if let Some((vf, "")) = leading_number(s) {
        return Some(PortName::VfRepresentor {
            controller: None,
            pf: None,
            vf,
        });
    }
    if let Some(rest) = s.strip_prefix('p')
        && !rest.starts_with('f')
    {
        let (port, rest) = leading_number(rest)?;
        return match rest {
            "" => Some(PortName::Uplink { port, split: None }),
            _ => {
                let (sub, "") = number_then(rest, "s")? else {
                    return None;
                };
                Some(PortName::Uplink {
                    port,
                    split: Some(sub),
                })
            }
        };
    }
    let (controller, rest) = match number_then(s, "c") {
        Some((c, rest)) => (Some(c), rest),
        None => (None, s),
    };
    let (pf, rest) = number_then(rest, "pf")?;
    if rest.is_empty() {
        return Some(PortName::PfRepresentor { controller, pf });
    }
    if let Some((vf, "")) = number_then(rest, "vf") {
        return Some(PortName::VfRepresentor {
            controller,
            pf: Some(pf),
            vf,
        });
    }
    if let Some((sf, "")) = number_then(rest, "sf") {
        return Some(PortName::SfRepresentor { controller, pf, sf });
    }
    None
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let controller = |f: &mut fmt::Formatter<'_>, c: &Option<u32>| match c {
            Some(c) => write!(f, "c{c}"),
            None => Ok(()),
        };
        match self {
            PortName::Uplink { port, split: None } => write!(f, "p{port}"),
            PortName::Uplink {
                port,
                split: Some(s),
            } => write!(f, "p{port}s{s}"),
            PortName::PfRepresentor { controller: c, pf } => {
                controller(f, c)?;
                write!(f, "pf{pf}")
            }
            PortName::VfRepresentor {
                controller: c,
                pf: Some(pf),
                vf,
            } => {
                controller(f, c)?;
                write!(f, "pf{pf}vf{vf}")
            }
            PortName::VfRepresentor { pf: None, vf, .. } => write!(f, "{vf}"),
            PortName::SfRepresentor {
                controller: c,
                pf,
                sf,
            } => {
                controller(f, c)?;
                write!(f, "pf{pf}sf{sf}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> PortName {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form_the_kernel_writes() {
        assert_eq!(
            p("p0"),
            PortName::Uplink {
                port: 0,
                split: None
            }
        );
        assert_eq!(
            p("p1s2"),
            PortName::Uplink {
                port: 1,
                split: Some(2)
            }
        );
        assert_eq!(
            p("pf0"),
            PortName::PfRepresentor {
                controller: None,
                pf: 0
            }
        );
        assert_eq!(
            p("c1pf0"),
            PortName::PfRepresentor {
                controller: Some(1),
                pf: 0
            }
        );
        assert_eq!(
            p("pf0vf3"),
            PortName::VfRepresentor {
                controller: None,
                pf: Some(0),
                vf: 3
            }
        );
        assert_eq!(
            p("c1pf1vf127"),
            PortName::VfRepresentor {
                controller: Some(1),
                pf: Some(1),
                vf: 127
            }
        );
        assert_eq!(
            p("pf0sf88"),
            PortName::SfRepresentor {
                controller: None,
                pf: 0,
                sf: 88
            }
        );
        assert_eq!(
            p("3"),
            PortName::VfRepresentor {
                controller: None,
                pf: None,
                vf: 3
            }
        );
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "",
            "p",
            "pf",
            "pfvf1",
            "pf0vf",
            "pf0vf1x",
            "p0s",
            "vf3",
            "eth0",
            "c1",
            "c1p0",
            "pf-1vf2",
            "p0 ",
            "99999999999",
        ] {
            let e = bad.parse::<PortName>().unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("unrecognised phys_port_name"));
        }
    }

    fn any_port_name() -> impl Strategy<Value = PortName> {
        let c = proptest::option::of(0u32..8);
        prop_oneof![
            (any::<u32>(), proptest::option::of(any::<u32>()))
                .prop_map(|(port, split)| PortName::Uplink { port, split }),
            (c.clone(), any::<u32>())
                .prop_map(|(controller, pf)| PortName::PfRepresentor { controller, pf }),
            (c.clone(), any::<u32>(), any::<u32>()).prop_map(|(controller, pf, vf)| {
                PortName::VfRepresentor {
                    controller,
                    pf: Some(pf),
                    vf,
                }
            }),
            any::<u32>().prop_map(|vf| PortName::VfRepresentor {
                controller: None,
                pf: None,
                vf
            }),
            (c, any::<u32>(), any::<u32>())
                .prop_map(|(controller, pf, sf)| PortName::SfRepresentor { controller, pf, sf }),
        ]
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(name in any_port_name()) {
            prop_assert_eq!(name.to_string().parse::<PortName>().unwrap(), name);
        }

        #[test]
        fn never_panics(s in "[cpfvs0-9]{0,12}") {
            let _ = s.parse::<PortName>();
        }
    }
}
