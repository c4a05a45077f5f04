//! The `offload` node profile's OVS settings: `Open_vSwitch other_config:hw-offload` and
//! `tc-policy`, as a pure plan of what to change and whether ovs-vswitchd must restart.
//!
//! OVS reads `hw-offload` once (enabling takes effect the first time it is seen, disabling
//! never does) and `tc-policy` only at that moment; ovs-vswitchd.conf.db(5) says changing
//! hw-offload requires restarting the daemon. So any change of either effective value means a
//! restart; rewriting a value to the same meaning does not.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub const HW_OFFLOAD: &str = "hw-offload";
pub const TC_POLICY: &str = "tc-policy";

/// `other_config:tc-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TcPolicy {
    /// Rules in software and hardware (OVS default).
    #[default]
    None,
    /// Hardware only: a flow the NIC refuses is not installed in tc software either.
    SkipSw,
    /// Software tc only (debugging).
    SkipHw,
}

impl TcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            TcPolicy::None => "none",
            TcPolicy::SkipSw => "skip_sw",
            TcPolicy::SkipHw => "skip_hw",
        }
    }
}

impl fmt::Display for TcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tc-policy {0:?}: expected none, skip_sw or skip_hw")]
pub struct TcPolicyError(pub String);

impl FromStr for TcPolicy {
    type Err = TcPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(TcPolicy::None),
            "skip_sw" => Ok(TcPolicy::SkipSw),
            "skip_hw" => Ok(TcPolicy::SkipHw),
            other => Err(TcPolicyError(other.to_string())),
        }
    }
}

/// What the node profile wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffloadSettings {
    pub hw_offload: bool,
    pub tc_policy: TcPolicy,
}

impl OffloadSettings {
    /// The settings `other_config` currently means to OVS (unknown values read as OVS reads
    /// them: a non-boolean hw-offload as false, an unknown tc-policy as none).
    pub fn effective(other_config: &BTreeMap<String, String>) -> Self {
        OffloadSettings {
            hw_offload: other_config
                .get(HW_OFFLOAD)
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            tc_policy: other_config
                .get(TC_POLICY)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default(),
        }
    }
}

/// Changes to `Open_vSwitch . other_config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtherConfigPlan {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
    pub restart_vswitchd: bool,
    /// Why a restart is needed, for the agent's log and status.
    pub reasons: Vec<String>,
}

impl OtherConfigPlan {
    pub fn is_noop(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && !self.restart_vswitchd
    }

    /// `other_config` after the plan is applied.
    pub fn apply(&self, other_config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = other_config.clone();
        for k in &self.remove {
            out.remove(k);
        }
        out.extend(self.set.clone());
        out
    }
}

/// What to write so that `current` means `desired`, and whether vswitchd must restart.
pub fn plan_offload_config(
    current: &BTreeMap<String, String>,
    desired: &OffloadSettings,
) -> OtherConfigPlan {
    let effective = OffloadSettings::effective(current);
    let mut plan = OtherConfigPlan::default();
    let mut want =
        |key: &str, value: Option<&str>| match (current.get(key).map(String::as_str), value) {
            (Some(cur), Some(v)) if cur == v => {}
            (_, Some(v)) => {
                plan.set.insert(key.to_string(), v.to_string());
            }
            (Some(_), None) => plan.remove.push(key.to_string()),
            (None, None) => {}
        };
    if desired.hw_offload {
        want(HW_OFFLOAD, Some("true"));
        want(
            TC_POLICY,
            (desired.tc_policy != TcPolicy::None).then(|| desired.tc_policy.as_str()),
        );
    } else {
        // Off: remove both, so the row says plainly what OVS does.
        want(HW_OFFLOAD, None);
        want(TC_POLICY, None);
    }
    if effective.hw_offload != desired.hw_offload {
        plan.restart_vswitchd = true;
        plan.reasons.push(format!(
            "hw-offload {} -> {}: OVS reads it once at start",
            effective.hw_offload, desired.hw_offload
        ));
    }
    if desired.hw_offload && effective.tc_policy != desired.tc_policy {
        plan.restart_vswitchd = true;
        plan.reasons.push(format!(
            "tc-policy {} -> {}: OVS applies it only when offload is enabled at start",
            effective.tc_policy, desired.tc_policy
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn enabling_offload_on_a_fresh_node_sets_it_and_restarts() {
        let plan = plan_offload_config(
            &cfg(&[("dpdk-init", "false")]),
            &OffloadSettings {
                hw_offload: true,
                tc_policy: TcPolicy::None,
            },
        );
        assert_eq!(plan.set, cfg(&[("hw-offload", "true")]));
        assert!(plan.remove.is_empty());
        assert!(plan.restart_vswitchd);
        assert!(plan.reasons[0].contains("hw-offload false -> true"));
    }

    #[test]
    fn already_configured_node_needs_nothing() {
        let current = cfg(&[("hw-offload", "true"), ("tc-policy", "skip_sw")]);
        let plan = plan_offload_config(
            &current,
            &OffloadSettings {
                hw_offload: true,
                tc_policy: TcPolicy::SkipSw,
            },
        );
        assert!(plan.is_noop(), "{plan:?}");
    }

    #[test]
    fn changing_only_tc_policy_restarts() {
        let current = cfg(&[("hw-offload", "true")]);
        let plan = plan_offload_config(
            &current,
            &OffloadSettings {
                hw_offload: true,
                tc_policy: TcPolicy::SkipHw,
            },
        );
        assert_eq!(plan.set, cfg(&[("tc-policy", "skip_hw")]));
        assert!(plan.restart_vswitchd);
        assert!(
            plan.reasons
                .iter()
                .any(|r| r.contains("tc-policy none -> skip_hw"))
        );
    }

    #[test]
    fn spelling_changes_without_meaning_changes_do_not_restart() {
        // "True" already means true to OVS; "none" written explicitly means the default.
        let current = cfg(&[("hw-offload", "True"), ("tc-policy", "none")]);
        let plan = plan_offload_config(
            &current,
            &OffloadSettings {
                hw_offload: true,
                tc_policy: TcPolicy::None,
            },
        );
        assert_eq!(plan.set, cfg(&[("hw-offload", "true")]));
        assert_eq!(plan.remove, vec!["tc-policy".to_string()]);
        assert!(!plan.restart_vswitchd);
    }

    #[test]
    fn disabling_removes_the_keys_and_restarts() {
        let current = cfg(&[
            ("hw-offload", "true"),
            ("tc-policy", "skip_sw"),
            ("other", "x"),
        ]);
        let plan = plan_offload_config(&current, &OffloadSettings::default());
        assert_eq!(
            plan.remove,
            vec!["hw-offload".to_string(), "tc-policy".to_string()]
        );
        assert!(plan.restart_vswitchd);
        assert_eq!(plan.apply(&current), cfg(&[("other", "x")]));
    }

    fn any_value() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("TRUE".to_string()),
            Just("none".to_string()),
            Just("skip_sw".to_string()),
            Just("skip_hw".to_string()),
            "[a-z_]{0,8}",
        ])
    }

    fn any_settings() -> impl Strategy<Value = OffloadSettings> {
        (
            any::<bool>(),
            prop_oneof![
                Just(TcPolicy::None),
                Just(TcPolicy::SkipSw),
                Just(TcPolicy::SkipHw)
            ],
        )
            .prop_map(|(hw_offload, tc_policy)| OffloadSettings {
                hw_offload,
                tc_policy,
            })
    }

    proptest! {
        #[test]
        fn applying_the_plan_reaches_the_desired_meaning_and_is_then_a_noop(
            hw in any_value(), tc in any_value(), desired in any_settings()
        ) {
            let mut current = cfg(&[("unrelated", "1")]);
            if let Some(v) = hw { current.insert(HW_OFFLOAD.into(), v); }
            if let Some(v) = tc { current.insert(TC_POLICY.into(), v); }
            let plan = plan_offload_config(&current, &desired);
            let after = plan.apply(&current);
            let reached = OffloadSettings::effective(&after);
            prop_assert_eq!(reached.hw_offload, desired.hw_offload);
            if desired.hw_offload {
                prop_assert_eq!(reached.tc_policy, desired.tc_policy);
            }
            prop_assert_eq!(after.get("unrelated").map(String::as_str), Some("1"));
            prop_assert!(plan_offload_config(&after, &desired).is_noop());
            // A restart exactly when what OVS acts on changes.
            let before = OffloadSettings::effective(&current);
            let meaning_changed = before.hw_offload != desired.hw_offload
                || (desired.hw_offload && before.tc_policy != desired.tc_policy);
            prop_assert_eq!(plan.restart_vswitchd, meaning_changed);
        }
    }
}
