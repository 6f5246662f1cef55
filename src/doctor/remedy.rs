//! Remedies as shell text: boot-loader-specific kernel parameters, module loading, the vfio
//! group, and the conversion of the rung probes' prose remedies.

use std::path::Path;

use crate::host::HostOps;
use crate::ladder::Reason;

/// Commands a remedy line may start with (after any `# ` comment lines). Lines that are not
/// commands are written as `# ` comments so that pasting a whole remedy is harmless.
pub const REMEDY_COMMANDS: [&str; 12] = [
    "sudo",
    "echo",
    "ulimit",
    "dmesg",
    "grep",
    "ls",
    "lsmod",
    "vulkaninfo",
    "export",
    "unset",
    "vm-cli",
    "cat",
];

/// Lets the user running vm-cli open `/dev/vfio/*`: a `vfio` group and a udev rule.
pub const FIX_VFIO_PERMISSIONS: &str = "sudo groupadd -f vfio && sudo usermod -aG vfio $USER
echo 'SUBSYSTEM==\"vfio\", GROUP=\"vfio\", MODE=\"0660\"' | sudo tee /etc/udev/rules.d/10-vfio.rules
sudo udevadm control --reload && sudo udevadm trigger --subsystem-match=vfio
# log out and in again so that the new group applies (or run vm-cli with sudo)";

/// True when `line` starts with one of [`REMEDY_COMMANDS`].
fn is_command(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|w| REMEDY_COMMANDS.contains(&w))
}

/// A rung reason's remedy as remedy text: kept when it is a command, else a comment.
pub(crate) fn from_reason(r: &Reason) -> Option<String> {
    let text = r.remedy.as_deref()?.trim();
    if text.is_empty() {
        return None;
    }
    Some(
        text.lines()
            .map(|l| {
                if is_command(l) || l.starts_with('#') {
                    l.to_string()
                } else {
                    format!("# {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// `sudo modprobe NAME` and the `modules-load.d` line that loads it at every boot.
pub(crate) fn load_module(name: &str) -> String {
    let dashed = name.replace('_', "-");
    format!("sudo modprobe {dashed}\necho {dashed} | sudo tee /etc/modules-load.d/{dashed}.conf")
}

/// Which boot loader configuration the host has (all false in most fixtures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BootLoader {
    /// `/etc/default/grub`.
    pub grub: bool,
    /// `/etc/kernel/cmdline` (systemd-boot or UKIs via `kernel-install`).
    pub kernel_cmdline: bool,
    /// A `loader/entries` directory of systemd-boot, when one exists.
    pub entries_dir: Option<&'static str>,
}

impl BootLoader {
    pub(crate) fn detect(host: &dyn HostOps) -> Self {
        Self {
            grub: host.exists(Path::new("/etc/default/grub")),
            kernel_cmdline: host.exists(Path::new("/etc/kernel/cmdline")),
            entries_dir: [
                "/boot/loader/entries",
                "/efi/loader/entries",
                "/boot/efi/loader/entries",
            ]
            .into_iter()
            .find(|d| host.is_dir(Path::new(d))),
        }
    }

    /// The files looked at, for evidence.
    pub(crate) fn evidence(&self) -> String {
        let mut found = Vec::new();
        if self.grub {
            found.push("/etc/default/grub".to_string());
        }
        if self.kernel_cmdline {
            found.push("/etc/kernel/cmdline".to_string());
        }
        if let Some(d) = self.entries_dir {
            found.push(d.to_string());
        }
        if found.is_empty() {
            "boot loader: none of /etc/default/grub, /etc/kernel/cmdline, /boot/loader/entries found".into()
        } else {
            format!("boot loader: {}", found.join(", "))
        }
    }

    /// Adds `params` to the kernel command line the way this host's boot loader takes it;
    /// both GRUB and systemd-boot when neither is recognised.
    pub(crate) fn add_params(&self, params: &str) -> String {
        let grub = format!(
            "# GRUB: add to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then regenerate
sudo sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=\"/&{params} /' /etc/default/grub
sudo update-grub  # Fedora, RHEL, openSUSE: sudo grub2-mkconfig -o /boot/grub2/grub.cfg"
        );
        let kernel_install = format!(
            "# systemd-boot: add to /etc/kernel/cmdline, then reinstall the boot entry
sudo sed -i '1s/$/ {params}/' /etc/kernel/cmdline
sudo kernel-install add \"$(uname -r)\" \"/lib/modules/$(uname -r)/vmlinuz\"  # Debian: /boot/vmlinuz-$(uname -r)"
        );
        let mut parts = Vec::new();
        if self.grub {
            parts.push(grub.clone());
        }
        if self.kernel_cmdline {
            parts.push(kernel_install.clone());
        } else if let Some(dir) = self.entries_dir {
            parts.push(format!(
                "# systemd-boot: add to the options line of the boot entries
sudo sed -i '/^options/s/$/ {params}/' {dir}/*.conf"
            ));
        }
        if parts.is_empty() {
            parts.push(grub);
            parts.push(kernel_install);
        }
        parts.push("# then reboot: sudo systemctl reboot".into());
        parts.join("\n")
    }
}
