//! Mediated-device UUIDs: random, given, or derived from a VM name so a restarted VM gets
//! the same device back.

use uuid::Uuid;

use super::MdevError;

/// The fixed namespace of vm-device's name-derived UUIDs (UUID v5 of `vm-device.mdev` in
/// the DNS namespace). Changing it would give every VM a new device: never change it.
pub const VM_DEVICE_NAMESPACE: Uuid = Uuid::from_bytes([
    0x36, 0x43, 0xa5, 0x6e, 0x7b, 0x45, 0x51, 0x43, 0xb8, 0x76, 0x8f, 0x1d, 0xa6, 0x1d, 0xb4, 0xdc,
]);

/// A fresh random UUID (v4).
pub fn random() -> Uuid {
    Uuid::new_v4()
}

/// The UUID of VM `vm_name`'s `index`-th mediated device: UUID v5 of `NAME/INDEX` in
/// [`VM_DEVICE_NAMESPACE`]. Same inputs, same UUID, on every host and every run.
pub fn for_vm(vm_name: &str, index: u32) -> Uuid {
    Uuid::new_v5(
        &VM_DEVICE_NAMESPACE,
        format!("{vm_name}/{index}").as_bytes(),
    )
}

/// Parses a UUID the way the kernel's `create` does (rule 26): canonical 8-4-4-4-12 hex,
/// case-insensitive. Braces, URNs and the 32-digit simple form are refused.
pub fn parse(text: &str) -> Result<Uuid, MdevError> {
    let t = text.trim_end_matches('\n');
    let canonical = t.len() == 36
        && t.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if !canonical {
        return Err(MdevError::BadUuid(text.to_string()));
    }
    Uuid::parse_str(t).map_err(|_| MdevError::BadUuid(text.to_string()))
}

/// The form sysfs uses for an mdev's name: lower-case hyphenated.
pub fn sysfs_name(u: &Uuid) -> String {
    u.hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_v5_of_the_project_name() {
        assert_eq!(
            VM_DEVICE_NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"vm-device.mdev")
        );
    }

    #[test]
    fn vm_uuid_is_stable_and_distinct_per_index() {
        let a = for_vm("web-1", 0);
        assert_eq!(a, for_vm("web-1", 0));
        assert_ne!(a, for_vm("web-1", 1));
        assert_ne!(a, for_vm("web-2", 0));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn parse_accepts_canonical_any_case_and_refuses_other_forms() {
        let u = parse("5E5E5E5E-0000-4000-8000-00000000000C\n").unwrap();
        assert_eq!(sysfs_name(&u), "5e5e5e5e-0000-4000-8000-00000000000c");
        for bad in [
            "not-a-uuid",
            "",
            "5e5e5e5e000040008000000000000001",
            "{5e5e5e5e-0000-4000-8000-000000000001}",
            "urn:uuid:5e5e5e5e-0000-4000-8000-000000000001",
        ] {
            assert!(matches!(parse(bad), Err(MdevError::BadUuid(_))), "{bad}");
        }
    }
}
