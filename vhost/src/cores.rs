//! Which CPUs the relay workers run on: parsing `--cores`, checking them against the CPUs this
//! process may use, and pinning a thread.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("core list {list:?}: {part:?} is not a CPU number or range like 2-3")]
    Syntax { list: String, part: String },
    #[error("core list {list:?}: range {part:?} runs backwards")]
    Backwards { list: String, part: String },
    #[error("core list is empty: give at least one CPU for a relay worker")]
    Empty,
    #[error(
        "core {core}: not in this process's allowed CPU set {allowed} (restricted by taskset, cgroup cpuset or the pod's CPU limits)"
    )]
    NotAllowed { core: usize, allowed: String },
    #[error("core {core}: sched_setaffinity failed: {reason}")]
    Pin { core: usize, reason: String },
    #[error("core {core}: beyond the largest CPU number this system supports ({max})")]
    TooLarge { core: usize, max: usize },
    #[error("reading this process's CPU affinity failed: {reason}")]
    Affinity { reason: String },
}

/// Parses `"2"`, `"2,3"`, `"2-5,8"` into a sorted list without duplicates.
pub fn parse_core_list(list: &str) -> Result<Vec<usize>, CoreError> {
    let mut cores = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let syntax = || CoreError::Syntax {
            list: list.to_owned(),
            part: part.to_owned(),
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| syntax())?;
                let b: usize = b.trim().parse().map_err(|_| syntax())?;
                if b < a {
                    return Err(CoreError::Backwards {
                        list: list.to_owned(),
                        part: part.to_owned(),
                    });
                }
                if b - a > 4096 {
                    return Err(syntax());
                }
                cores.extend(a..=b);
            }
            None => {
                cores.insert(part.parse().map_err(|_| syntax())?);
            }
        }
    }
    if cores.is_empty() {
        return Err(CoreError::Empty);
    }
    Ok(cores.into_iter().collect())
}

/// Formats CPUs the way the kernel does (`0-3,6`).
pub fn format_core_list(cores: &[usize]) -> String {
    let mut sorted: Vec<usize> = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// Every requested core must be one this process may run on; the first that is not is named.
pub fn check_cores(requested: &[usize], allowed: &[usize]) -> Result<(), CoreError> {
    if requested.is_empty() {
        return Err(CoreError::Empty);
    }
    for &core in requested {
        if !allowed.contains(&core) {
            return Err(CoreError::NotAllowed {
                core,
                allowed: format_core_list(allowed),
            });
        }
    }
    Ok(())
}

/// The CPUs this process may run on now (read before EAL touches affinity).
pub fn allowed_cores() -> Result<Vec<usize>, CoreError> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| CoreError::Affinity {
        reason: e.to_string(),
    })?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<(), CoreError> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(core).map_err(|_| CoreError::TooLarge {
        core,
        max: CpuSet::count() - 1,
    })?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| CoreError::Pin {
        core,
        reason: match e {
            nix::errno::Errno::EINVAL => {
                "the CPU is offline or outside this process's cpuset".to_owned()
            }
            nix::errno::Errno::EPERM => "not permitted to change this thread's affinity".to_owned(),
            other => other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_core_list("3"), Ok(vec![3]));
        assert_eq!(parse_core_list("1,0"), Ok(vec![0, 1]));
        assert_eq!(parse_core_list("2-4, 8,3"), Ok(vec![2, 3, 4, 8]));
    }

    #[test]
    fn rejects_garbage_with_the_offending_part() {
        assert_eq!(
            parse_core_list("1,x"),
            Err(CoreError::Syntax {
                list: "1,x".into(),
                part: "x".into()
            })
        );
        assert_eq!(
            parse_core_list("5-2"),
            Err(CoreError::Backwards {
                list: "5-2".into(),
                part: "5-2".into()
            })
        );
        assert_eq!(parse_core_list(" , "), Err(CoreError::Empty));
        assert!(matches!(
            parse_core_list("0-99999999"),
            Err(CoreError::Syntax { .. })
        ));
    }

    #[test]
    fn names_the_core_that_is_not_allowed() {
        let err = check_cores(&[0, 5], &[0, 1]).unwrap_err();
        assert_eq!(
            err,
            CoreError::NotAllowed {
                core: 5,
                allowed: "0-1".into()
            }
        );
        assert!(err.to_string().contains("core 5"));
        assert_eq!(check_cores(&[1], &[0, 1]), Ok(()));
    }

    #[test]
    fn pinning_to_a_core_we_cannot_use_says_which() {
        let allowed = allowed_cores().expect("affinity");
        // CpuSet::count() is past the last valid CPU number.
        let err = pin_current_thread(nix::sched::CpuSet::count()).unwrap_err();
        assert!(matches!(err, CoreError::TooLarge { .. }), "{err}");
        assert!(!allowed.is_empty());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(cores in proptest::collection::btree_set(0usize..256, 1..40)) {
            let cores: Vec<usize> = cores.into_iter().collect();
            prop_assert_eq!(parse_core_list(&format_core_list(&cores)), Ok(cores));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = parse_core_list(&s);
        }
    }
}
