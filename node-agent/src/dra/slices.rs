//! The node's DRA devices as `resource.k8s.io/v1` ResourceSlices (pure).
//!
//! One pool per node, named after the node, in as many slices as the API's limit of 128
//! devices per slice needs; every slice of the pool carries the pool's generation and the
//! number of slices, so a consumer can tell a complete pool from one being rewritten. A
//! device the API would refuse (a name that is not a DNS label, more than 32 attributes and
//! capacities, an attribute name or value out of bounds) is left out with its reason, so one
//! bad device never hides the node's others.
//!
//! The API server rewrites quantities into its canonical form (`17179869184` may come back
//! as `16Gi`): [`same_content`] compares capacities by value, so an unchanged node is not
//! rewritten on every publication.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::resource::v1::{
    Device, DeviceAttribute, DeviceCapacity, ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::devices::{Attr, DraDevice};
use super::DRIVER_NAME;

/// The most devices one ResourceSlice may list (`ResourceSliceMaxDevices`).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// The most attributes and capacities, together, of one device.
pub const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;
/// The longest string or version attribute value.
pub const MAX_ATTRIBUTE_VALUE: usize = 64;
/// The longest identifier part of an attribute or capacity name (a C identifier).
pub const MAX_ID_LENGTH: usize = 32;
/// The longest domain part of an attribute or capacity name.
pub const MAX_DOMAIN_LENGTH: usize = 63;
/// The longest DNS subdomain (node names, object names, pool names).
const SUBDOMAIN_MAX: usize = 253;

/// Why no slice can be built for the node at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    /// The node name (the pool's name, `spec.nodeName`) is not a DNS subdomain.
    #[error("node name {0:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters): set NODE_NAME to the Node object's name")]
    BadNodeName(String),
    /// Two devices share a name.
    #[error("two devices are both named {0:?}: device names must be unique on the node")]
    DuplicateDevice(String),
}

/// A device left out of the slices, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The device's name.
    pub device: String,
    /// What the API would refuse.
    pub reason: String,
}

/// The slices of one publication.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// The slices, named [`slice_name`]`(node, 0..)`, each with the pool's generation and
    /// slice count.
    pub slices: Vec<ResourceSlice>,
    /// Devices left out.
    pub skipped: Vec<Skipped>,
}

/// The ResourceSlices that publish `devices` as pool `node` at `generation`: devices in name
/// order, [`MAX_DEVICES_PER_SLICE`] to a slice; no devices make no slices.
pub fn slices(node: &str, generation: i64, devices: &[DraDevice]) -> Result<Pool, SliceError> {
    if !is_dns_subdomain(node) {
        return Err(SliceError::BadNodeName(node.to_string()));
    }
    let mut seen = BTreeSet::new();
    for d in devices {
        if !seen.insert(d.name.as_str()) {
            return Err(SliceError::DuplicateDevice(d.name.clone()));
        }
    }
    let mut sorted: Vec<&DraDevice> = devices.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut skipped = Vec::new();
    let mut out = Vec::new();
    for d in sorted {
        match device(d) {
            Ok(dev) => out.push(dev),
            Err(reason) => skipped.push(Skipped {
                device: d.name.clone(),
                reason,
            }),
        }
    }
    let chunks: Vec<Vec<Device>> = out
        .chunks(MAX_DEVICES_PER_SLICE)
        .map(<[Device]>::to_vec)
        .collect();
    let count = chunks.len() as i64;
    let slices = chunks
        .into_iter()
        .enumerate()
        .map(|(i, devices)| ResourceSlice {
            metadata: ObjectMeta {
                name: Some(slice_name(node, i)),
                ..ObjectMeta::default()
            },
            spec: ResourceSliceSpec {
                driver: DRIVER_NAME.to_string(),
                node_name: Some(node.to_string()),
                pool: ResourcePool {
                    name: node.to_string(),
                    generation,
                    resource_slice_count: count,
                },
                devices: Some(devices),
                ..ResourceSliceSpec::default()
            },
        })
        .collect();
    Ok(Pool { slices, skipped })
}

/// The name of slice `index` of `node`'s pool: `<node>-gpu.vm-device.io-<index>`, a DNS
/// subdomain; a node name too long for that keeps its head and a hash of the whole.
pub fn slice_name(node: &str, index: usize) -> String {
    let tail = format!("-{DRIVER_NAME}-{index}");
    if node.len() + tail.len() <= SUBDOMAIN_MAX {
        return format!("{node}{tail}");
    }
    // FNV-1a: stable across runs and builds.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let hash = format!("-{:08x}", hash as u32);
    let keep = SUBDOMAIN_MAX - tail.len() - hash.len();
    let head = node[..keep].trim_end_matches(['-', '.']);
    format!("{head}{hash}{tail}")
}

/// One device as the API has it, or why the API would refuse it.
fn device(d: &DraDevice) -> Result<Device, String> {
    if !is_dns_label(&d.name) {
        return Err(format!(
            "name {:?} is not a DNS label (lowercase letters, digits and '-', at most 63 characters)",
            d.name
        ));
    }
    let n = d.attributes.len() + d.capacity.len();
    if n > MAX_ATTRIBUTES_AND_CAPACITIES {
        return Err(format!(
            "{n} attributes and capacities, more than the {MAX_ATTRIBUTES_AND_CAPACITIES} a device may have"
        ));
    }
    let mut attributes = BTreeMap::new();
    for (k, v) in &d.attributes {
        check_qualified_name(k).map_err(|e| format!("attribute {k:?}: {e}"))?;
        let v = attribute(v).map_err(|e| format!("attribute {k:?}: {e}"))?;
        attributes.insert(k.clone(), v);
    }
    let mut capacity = BTreeMap::new();
    for (k, v) in &d.capacity {
        check_qualified_name(k).map_err(|e| format!("capacity {k:?}: {e}"))?;
        if d.attributes.contains_key(k) {
            return Err(format!("{k:?} is both an attribute and a capacity"));
        }
        capacity.insert(
            k.clone(),
            DeviceCapacity {
                value: bytes_quantity(*v),
                ..DeviceCapacity::default()
            },
        );
    }
    Ok(Device {
        name: d.name.clone(),
        attributes: (!attributes.is_empty()).then_some(attributes),
        capacity: (!capacity.is_empty()).then_some(capacity),
        ..Device::default()
    })
}

fn attribute(a: &Attr) -> Result<DeviceAttribute, String> {
    Ok(match a {
        Attr::Int(i) => DeviceAttribute {
            int: Some(*i),
            ..DeviceAttribute::default()
        },
        Attr::Bool(b) => DeviceAttribute {
            bool: Some(*b),
            ..DeviceAttribute::default()
        },
        Attr::String(s) => {
            if s.chars().count() > MAX_ATTRIBUTE_VALUE {
                return Err(format!(
                    "string value longer than {MAX_ATTRIBUTE_VALUE} characters"
                ));
            }
            DeviceAttribute {
                string: Some(s.clone()),
                ..DeviceAttribute::default()
            }
        }
        Attr::Version(v) => {
            if v.len() > MAX_ATTRIBUTE_VALUE || !is_semver(v) {
                return Err(format!(
                    "version {v:?} is not a semantic version of at most {MAX_ATTRIBUTE_VALUE} characters"
                ));
            }
            DeviceAttribute {
                version: Some(v.clone()),
                ..DeviceAttribute::default()
            }
        }
    })
}

/// An attribute or capacity name: a C identifier of at most 32 characters, optionally after
/// a DNS subdomain of at most 63 and a `/`.
pub fn check_qualified_name(name: &str) -> Result<(), String> {
    let (domain, id) = match name.split_once('/') {
        Some((d, i)) => (Some(d), i),
        None => (None, name),
    };
    if let Some(d) = domain {
        if d.len() > MAX_DOMAIN_LENGTH || !is_dns_subdomain(d) {
            return Err(format!(
                "domain {d:?} is not a DNS subdomain of at most {MAX_DOMAIN_LENGTH} characters"
            ));
        }
    }
    let mut chars = id.chars();
    let c_ident = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !c_ident || id.len() > MAX_ID_LENGTH {
        return Err(format!(
            "{id:?} is not a C identifier of at most {MAX_ID_LENGTH} characters"
        ));
    }
    Ok(())
}

/// A DNS label (RFC 1123): 1 to 63 lowercase letters, digits and `-`, alphanumeric at both
/// ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain as Kubernetes has it (RFC 1123, `IsDNS1123Subdomain`): at most 253
/// characters, parts of lowercase letters, digits and `-` joined by `.`, each alphanumeric
/// at both ends (Kubernetes puts no 63-character limit on a part).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= SUBDOMAIN_MAX
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

/// `MAJOR.MINOR.PATCH[-PRE][+BUILD]` (semver.org 2.0.0).
fn is_semver(v: &str) -> bool {
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numeric = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| {
            p.split('.')
                .all(|i| ident(i) && (!i.bytes().all(|b| b.is_ascii_digit()) || numeric(i)))
        })
        && build.is_none_or(|b| b.split('.').all(ident))
}

/// `bytes` as a Quantity in the API server's canonical form: the largest binary suffix
/// (`Ki` … `Ei`) that divides it exactly, or plain digits.
pub fn bytes_quantity(bytes: u64) -> Quantity {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes == 0 {
        return Quantity("0".into());
    }
    let mut n = bytes;
    let mut suffix = "";
    for s in SUFFIXES {
        if !n.is_multiple_of(1024) {
            break;
        }
        n /= 1024;
        suffix = s;
    }
    Quantity(format!("{n}{suffix}"))
}

/// A quantity's value as `(numerator, decimal places)` with no trailing zeros in the
/// numerator's fractional part, so equal values compare equal whatever their spelling
/// (`16Gi`, `17179869184`, `17179869184000m`); `None` for what is not a quantity or does
/// not fit.
pub fn quantity_value(q: &Quantity) -> Option<(i128, u32)> {
    let s = q.0.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut num: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        num = num.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let mut places = frac.len() as u32;
    let mut scale = |base: i128, power: u32| -> Option<()> {
        num = num.checked_mul(base.checked_pow(power)?)?;
        Some(())
    };
    match suffix {
        "" => {}
        "Ki" => scale(1024, 1)?,
        "Mi" => scale(1024, 2)?,
        "Gi" => scale(1024, 3)?,
        "Ti" => scale(1024, 4)?,
        "Pi" => scale(1024, 5)?,
        "Ei" => scale(1024, 6)?,
        "k" => scale(10, 3)?,
        "M" => scale(10, 6)?,
        "G" => scale(10, 9)?,
        "T" => scale(10, 12)?,
        "P" => scale(10, 15)?,
        "E" => scale(10, 18)?,
        "m" => places += 3,
        "u" => places += 6,
        "n" => places += 9,
        e => {
            let exp: i32 = e
                .strip_prefix(['e', 'E'])
                .and_then(|x| x.parse().ok())
                .filter(|x: &i32| x.abs() <= 38)?;
            if exp >= 0 {
                scale(10, exp as u32)?;
            } else {
                places += exp.unsigned_abs();
            }
        }
    }
    while places > 0 && num % 10 == 0 {
        num /= 10;
        places -= 1;
    }
    if num == 0 {
        places = 0;
    }
    Some((if neg { -num } else { num }, places))
}

fn same_quantity(a: &Quantity, b: &Quantity) -> bool {
    match (quantity_value(a), quantity_value(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.0 == b.0,
    }
}

/// Whether two slices publish the same thing: driver, node, pool (name, generation, slice
/// count) and devices (names, attributes, capacities by value). Metadata the API server adds
/// and fields this driver never sets are not compared.
pub fn same_content(a: &ResourceSlice, b: &ResourceSlice) -> bool {
    let (a, b) = (&a.spec, &b.spec);
    let empty = Vec::new();
    let da = a.devices.as_ref().unwrap_or(&empty);
    let db = b.devices.as_ref().unwrap_or(&empty);
    a.driver == b.driver
        && a.node_name == b.node_name
        && a.pool == b.pool
        && da.len() == db.len()
        && da.iter().zip(db).all(|(x, y)| same_device(x, y))
}

fn same_device(a: &Device, b: &Device) -> bool {
    let none = BTreeMap::new();
    let ca = a.capacity.as_ref().unwrap_or(&none);
    let cb = b.capacity.as_ref().unwrap_or(&none);
    a.name == b.name
        && a.attributes.clone().unwrap_or_default() == b.attributes.clone().unwrap_or_default()
        && ca.len() == cb.len()
        && ca.iter().zip(cb).all(|((ka, va), (kb, vb))| {
            ka == kb
                && same_quantity(&va.value, &vb.value)
                && va.request_policy == vb.request_policy
        })
}

#[cfg(test)]
mod tests {
    use super::super::devices::DraKind;
    use super::*;

    fn wgpu(share: u32) -> DraDevice {
        DraDevice {
            name: format!("wgpu-{share}"),
            kind: DraKind::Wgpu { share },
            attributes: BTreeMap::from([
                ("rung".to_string(), Attr::String("wgpu".into())),
                ("share".to_string(), Attr::Int(i64::from(share))),
            ]),
            capacity: BTreeMap::from([("memory".to_string(), 16u64 << 30)]),
        }
    }

    #[test]
    fn three_hundred_devices_make_three_slices_of_one_pool() {
        let devices: Vec<DraDevice> = (0..300).map(wgpu).collect();
        let pool = slices("node-a", 7, &devices).unwrap();
        assert!(pool.skipped.is_empty());
        assert_eq!(pool.slices.len(), 3);
        let mut names = BTreeSet::new();
        for (i, s) in pool.slices.iter().enumerate() {
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(slice_name("node-a", i).as_str())
            );
            assert_eq!(s.spec.driver, DRIVER_NAME);
            assert_eq!(s.spec.node_name.as_deref(), Some("node-a"));
            assert_eq!(s.spec.pool.name, "node-a");
            assert_eq!(s.spec.pool.generation, 7);
            assert_eq!(s.spec.pool.resource_slice_count, 3);
            let devs = s.spec.devices.as_ref().unwrap();
            assert!(devs.len() <= MAX_DEVICES_PER_SLICE, "{}", devs.len());
            names.extend(devs.iter().map(|d| d.name.clone()));
        }
        assert_eq!(names.len(), 300, "every device once");
        let sizes: Vec<usize> = pool
            .slices
            .iter()
            .map(|s| s.spec.devices.as_ref().unwrap().len())
            .collect();
        assert_eq!(sizes, [128, 128, 44]);
    }

    #[test]
    fn exactly_128_devices_fit_one_slice_and_none_make_none() {
        let devices: Vec<DraDevice> = (0..128).map(wgpu).collect();
        assert_eq!(slices("n", 1, &devices).unwrap().slices.len(), 1);
        let devices: Vec<DraDevice> = (0..129).map(wgpu).collect();
        assert_eq!(slices("n", 1, &devices).unwrap().slices.len(), 2);
        assert!(slices("n", 1, &[]).unwrap().slices.is_empty());
    }

    #[test]
    fn attributes_and_capacity_take_the_api_types() {
        let mut d = wgpu(0);
        d.attributes.insert("flag".into(), Attr::Bool(true));
        d.attributes.insert(
            "driverVersion".into(),
            Attr::Version("1.2.3-rc.1+b5".into()),
        );
        let pool = slices("n", 1, &[d]).unwrap();
        let dev = &pool.slices[0].spec.devices.as_ref().unwrap()[0];
        let attrs = dev.attributes.as_ref().unwrap();
        assert_eq!(attrs["rung"].string.as_deref(), Some("wgpu"));
        assert_eq!(attrs["share"].int, Some(0));
        assert_eq!(attrs["flag"].bool, Some(true));
        assert_eq!(
            attrs["driverVersion"].version.as_deref(),
            Some("1.2.3-rc.1+b5")
        );
        for a in attrs.values() {
            let set = [
                a.int.is_some(),
                a.bool.is_some(),
                a.string.is_some(),
                a.version.is_some(),
            ];
            assert_eq!(
                set.iter().filter(|x| **x).count(),
                1,
                "exactly one value: {a:?}"
            );
        }
        assert_eq!(dev.capacity.as_ref().unwrap()["memory"].value.0, "16Gi");
        // The JSON is what resource.k8s.io/v1 reads.
        let json = serde_json::to_value(&pool.slices[0]).unwrap();
        assert_eq!(json["apiVersion"], "resource.k8s.io/v1");
        assert_eq!(json["kind"], "ResourceSlice");
        assert_eq!(json["spec"]["pool"]["resourceSliceCount"], 1);
        assert_eq!(
            json["spec"]["devices"][0]["capacity"]["memory"]["value"],
            "16Gi"
        );
        assert_eq!(json["spec"]["devices"][0]["attributes"]["share"]["int"], 0);
    }

    #[test]
    fn a_device_over_the_limits_is_left_out_with_its_reason() {
        let mut many = wgpu(1);
        for i in 0..40 {
            many.attributes.insert(format!("a{i}"), Attr::Int(i));
        }
        let mut bad_name = wgpu(2);
        bad_name.name = "Not_A_Label".into();
        let mut long_value = wgpu(3);
        long_value
            .attributes
            .insert("model".into(), Attr::String("x".repeat(65)));
        let mut bad_attr = wgpu(4);
        bad_attr.attributes.insert("9lives".into(), Attr::Int(9));
        let mut bad_version = wgpu(5);
        bad_version
            .attributes
            .insert("v".into(), Attr::Version("1.2".into()));
        let ok = wgpu(0);
        let pool = slices(
            "n",
            1,
            &[many, bad_name, long_value, bad_attr, bad_version, ok],
        )
        .unwrap();
        let published: Vec<&str> = pool.slices[0]
            .spec
            .devices
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(published, ["wgpu-0"]);
        let reasons: BTreeMap<&str, &str> = pool
            .skipped
            .iter()
            .map(|s| (s.device.as_str(), s.reason.as_str()))
            .collect();
        assert!(
            reasons["wgpu-1"].contains("more than the 32"),
            "{reasons:?}"
        );
        assert!(reasons["Not_A_Label"].contains("DNS label"), "{reasons:?}");
        assert!(reasons["wgpu-3"].contains("64 characters"), "{reasons:?}");
        assert!(reasons["wgpu-4"].contains("C identifier"), "{reasons:?}");
        assert!(
            reasons["wgpu-5"].contains("semantic version"),
            "{reasons:?}"
        );
    }

    #[test]
    fn exactly_32_attributes_and_capacities_are_published() {
        let mut d = wgpu(0);
        for i in 0..29 {
            d.attributes.insert(format!("a{i}"), Attr::Int(i));
        }
        assert_eq!(d.attributes.len() + d.capacity.len(), 32);
        let pool = slices("n", 1, &[d]).unwrap();
        assert!(pool.skipped.is_empty(), "{:?}", pool.skipped);
    }

    #[test]
    fn bad_node_names_and_duplicate_devices_are_refused() {
        for node in ["", "Node-A", "a_b", "-a", &"a".repeat(254)] {
            assert_eq!(
                slices(node, 1, &[]),
                Err(SliceError::BadNodeName(node.to_string()))
            );
        }
        assert!(slices("worker-1.example.com", 1, &[]).is_ok());
        assert_eq!(
            slices("n", 1, &[wgpu(0), wgpu(0)]),
            Err(SliceError::DuplicateDevice("wgpu-0".into()))
        );
    }

    #[test]
    fn slice_names_are_dns_subdomains_even_for_the_longest_node_names() {
        assert_eq!(slice_name("node-a", 2), "node-a-gpu.vm-device.io-2");
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        assert!(is_dns_subdomain(&long));
        let a = slice_name(&long, 0);
        let b = slice_name(&format!("{}.{}", "a".repeat(200), "c".repeat(52)), 0);
        assert!(is_dns_subdomain(&a) && a.len() <= 253, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn quantities_compare_by_value() {
        let q = |s: &str| Quantity(s.to_string());
        assert_eq!(bytes_quantity(16 << 30).0, "16Gi");
        assert_eq!(bytes_quantity(1536).0, "1536");
        assert_eq!(bytes_quantity(3 << 10).0, "3Ki");
        assert_eq!(bytes_quantity(1000).0, "1000");
        assert_eq!(bytes_quantity(0).0, "0");
        for (a, b) in [
            ("16Gi", "17179869184"),
            ("1500M", "1500000000"),
            ("1.5G", "1500M"),
            ("1e3", "1k"),
            ("1000m", "1"),
            ("0", "0Gi"),
        ] {
            assert!(same_quantity(&q(a), &q(b)), "{a} == {b}");
        }
        for (a, b) in [("16Gi", "16G"), ("1", "1001m"), ("1Ki", "1k")] {
            assert!(!same_quantity(&q(a), &q(b)), "{a} != {b}");
        }
        assert_eq!(quantity_value(&q("lots")), None);
        assert_eq!(quantity_value(&q("1.2.3")), None);
        assert_eq!(quantity_value(&q("9999999999999999999999Ei")), None);
    }

    #[test]
    fn same_content_ignores_server_metadata_and_quantity_spelling() {
        let a = slices("n", 3, &[wgpu(0)]).unwrap().slices.remove(0);
        let mut b = a.clone();
        b.metadata.uid = Some("u".into());
        b.metadata.resource_version = Some("9".into());
        b.spec.devices.as_mut().unwrap()[0]
            .capacity
            .as_mut()
            .unwrap()
            .get_mut("memory")
            .unwrap()
            .value = Quantity("17179869184".into());
        assert!(same_content(&a, &b));
        let mut c = b.clone();
        c.spec.pool.generation = 4;
        assert!(!same_content(&a, &c));
        let mut d = b.clone();
        d.spec.devices.as_mut().unwrap()[0]
            .attributes
            .as_mut()
            .unwrap()
            .insert(
                "share".into(),
                DeviceAttribute {
                    int: Some(5),
                    ..DeviceAttribute::default()
                },
            );
        assert!(!same_content(&a, &d));
    }
}
