//! Privileged containers where the host allows them, and the closest
//! equivalent where it does not.
//!
//! `privileged: true` makes runc grant every capability the kernel knows. In
//! a sandbox whose capability bounding set lacks some of them (our CI
//! machines lack CAP_SYS_RESOURCE), runc fails at start with "unable to apply
//! caps". The equivalent built here grants everything the bounding set
//! allows and unconfines the rest, which is what an action needs: raw block
//! devices, mount, host PIDs, writable /proc/sys.

use bollard::models::HostConfig;

/// Capability names by number (linux/capability.h), up to CAP_CHECKPOINT_RESTORE.
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// How this host can run privileged containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivilegeMode {
    /// Plain `privileged: true` (real hardware, the hook image).
    Full,
    /// All capabilities except these, which the bounding set lacks.
    Equivalent { missing: Vec<String> },
}

impl PrivilegeMode {
    /// Reads this process's bounding set. The agent runs beside the Docker
    /// daemon (same host, same sandbox), so its bounding set is the one runc
    /// will hit.
    pub fn detect() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(CAP_NAMES.len() - 1);
        Self::from_status(&status, last_cap)
    }

    fn from_status(status: &str, last_cap: usize) -> Self {
        let Some(bounding) = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        else {
            return Self::Full;
        };
        let missing: Vec<String> = (0..=last_cap.min(CAP_NAMES.len() - 1))
            .filter(|bit| bounding & (1u64 << bit) == 0)
            .map(|bit| CAP_NAMES[bit].to_string())
            .collect();
        if missing.is_empty() { Self::Full } else { Self::Equivalent { missing } }
    }

    /// Fills the privilege part of a container's host config.
    pub fn apply(&self, hc: &mut HostConfig) {
        match self {
            Self::Full => hc.privileged = Some(true),
            Self::Equivalent { missing } => {
                hc.privileged = Some(false);
                // "ALL" rather than a list: the daemon rejects capability
                // names it does not know (20.10 knows none past AUDIT_READ).
                hc.cap_add = Some(vec!["ALL".into()]);
                hc.cap_drop = Some(missing.clone());
                hc.security_opt =
                    Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into(), "label=disable".into()]);
                // Without this rule the device cgroup denies access to the
                // block devices the action is there to write.
                hc.device_cgroup_rules = Some(vec!["a *:* rwm".into()]);
                hc.masked_paths = Some(Vec::new());
                hc.readonly_paths = Some(Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bounding_set_means_plain_privileged() {
        let mode = PrivilegeMode::from_status("Name:\tx\nCapBnd:\t000001ffffffffff\n", 40);
        assert_eq!(mode, PrivilegeMode::Full);
        let mut hc = HostConfig::default();
        mode.apply(&mut hc);
        assert_eq!(hc.privileged, Some(true));
        assert!(hc.cap_add.is_none());
    }

    #[test]
    fn missing_sys_resource_builds_the_equivalent() {
        // The bounding set seen on our CI machines.
        let mode = PrivilegeMode::from_status("CapBnd:\t000001fffeffffff\n", 40);
        assert_eq!(mode, PrivilegeMode::Equivalent { missing: vec!["CAP_SYS_RESOURCE".into()] });
        let mut hc = HostConfig::default();
        mode.apply(&mut hc);
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.cap_add, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.cap_drop, Some(vec!["CAP_SYS_RESOURCE".to_string()]));
        assert_eq!(hc.device_cgroup_rules, Some(vec!["a *:* rwm".to_string()]));
        assert_eq!(hc.masked_paths, Some(vec![]));
    }

    #[test]
    fn caps_beyond_the_kernel_are_not_missing() {
        let mode = PrivilegeMode::from_status("CapBnd:\t0000003fffffffff\n", 37);
        assert_eq!(mode, PrivilegeMode::Full);
    }
}
