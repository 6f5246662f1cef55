//! `vm-device-agent export`: the KubeVirt snippet checked against KubeVirt's own OpenAPI
//! definitions (vendored, schemas/kubevirt/NOTICE), the libvirt XML against libvirt's
//! schemas with `virt-xml-validate` (Debian's libvirt-clients).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::openapi::validate;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hosts")
        .join(name)
}

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-device-agent"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubevirt_schema() -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/kubevirt/permitted-host-devices.json"),
    )
    .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["definitions"].clone()
}

fn check_kubevirt(doc: &Value) -> Result<(), String> {
    let defs = kubevirt_schema();
    let phd = doc
        .get("permittedHostDevices")
        .ok_or("no permittedHostDevices")?;
    validate(
        &defs,
        &defs["v1.PermittedHostDevices"],
        phd,
        "permittedHostDevices",
    )
}

#[test]
fn the_validator_refuses_what_kubevirt_would_not_take() {
    // Guards the validator itself: each of these must be refused.
    for bad in [
        r#"{"permittedHostDevices":{"pciHostDevices":[{"resourceName":"x"}]}}"#,
        r#"{"permittedHostDevices":{"pciHostDevices":[{"pciVendorSelector":"10DE:1EB8","resourceName":"x","externalResourceProvider":"yes"}]}}"#,
        r#"{"permittedHostDevices":{"mediatedDevices":[{"mdevNameSelector":"a","resourceName":"x","extra":1}]}}"#,
        r#"{"permittedHostDevices":{"pciHostDevices":{}}}"#,
    ] {
        let v: Value = serde_json::from_str(bad).unwrap();
        assert!(check_kubevirt(&v).is_err(), "accepted: {bad}");
    }
}

#[test]
fn kubevirt_snippet_matches_kubevirts_schema_and_the_agents_resources() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.json");
    std::fs::write(
        &cfg,
        r#"{"passthrough":"available","mdev":[{"type":"GRID T4-1Q","count":2,"parent":"0000:86:00.0"}]}"#,
    )
    .unwrap();
    let root = fixture("bmc-datacenter-nvidia-vgpu");
    let (code, out, err) = agent(&[
        "--host-root",
        root.to_str().unwrap(),
        "export",
        "kubevirt",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    check_kubevirt(&doc).unwrap();
    let phd = &doc["permittedHostDevices"];
    assert_eq!(
        phd["pciHostDevices"],
        serde_json::json!([{"pciVendorSelector":"10DE:1EB8","resourceName":"vm-device.io/10de-1eb8","externalResourceProvider":true}])
    );
    assert_eq!(
        phd["mediatedDevices"],
        serde_json::json!([{"mdevNameSelector":"GRID T4-1Q","resourceName":"vm-device.io/nvidia-230","externalResourceProvider":true}])
    );
    // The YAML form carries the same document.
    let (code, yaml, err) = agent(&[
        "--host-root",
        root.to_str().unwrap(),
        "export",
        "kubevirt",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        yaml,
        "permittedHostDevices:\n  mediatedDevices:\n    - externalResourceProvider: true\n      \
         mdevNameSelector: \"GRID T4-1Q\"\n      resourceName: \"vm-device.io/nvidia-230\"\n  \
         pciHostDevices:\n    - externalResourceProvider: true\n      pciVendorSelector: \"10DE:1EB8\"\n      \
         resourceName: \"vm-device.io/10de-1eb8\"\n"
    );
}

#[test]
fn kubevirt_export_names_what_it_cannot_offer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.json");
    std::fs::write(&cfg, r#"{"mdev":[{"type":"GRID T9-1Q","count":1}]}"#).unwrap();
    let root = fixture("bmc-datacenter-nvidia-vgpu");
    let (code, out, err) = agent(&[
        "--host-root",
        root.to_str().unwrap(),
        "export",
        "kubevirt",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(err.contains("GRID T9-1Q"), "{err}");
}

/// Wraps a hostdev in the smallest domain libvirt's schema accepts.
fn domain_with(hostdev: &str) -> String {
    format!(
        "<domain type='kvm'>\n<name>t</name>\n<memory>1048576</memory>\n<os><type arch='x86_64' machine='q35'>hvm</type></os>\n<devices>\n{hostdev}</devices>\n</domain>\n"
    )
}

fn virt_xml_validate(xml: &str) -> Option<Result<(), String>> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("domain.xml");
    std::fs::write(&f, xml).unwrap();
    match Command::new("virt-xml-validate")
        .arg(&f)
        .arg("domain")
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
        Ok(o) if o.status.success() => Some(Ok(())),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("xmllint: not found") => panic!(
            "virt-xml-validate runs xmllint, which is not installed (Debian: libxml2-utils, \
             which .ci/install-deps installs): the libvirt XML cannot be validated"
        ),
        Ok(o) => Some(Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))),
    }
}

#[test]
fn libvirt_hostdev_for_a_gpu_and_an_mdev_validates() {
    let root = fixture("bmc-datacenter-nvidia-vgpu");
    let (code, pci, err) = agent(&[
        "--host-root",
        root.to_str().unwrap(),
        "export",
        "libvirt",
        "--gpu-device",
        "0000:86:00.0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        pci.contains("<address domain='0x0000' bus='0x86' slot='0x00' function='0x0'/>"),
        "{pci}"
    );
    // An active mdev of the fixture.
    let uuid = vm_device::inventory::HostInventory::scan(
        &vm_device_sim::SimHost::from_fixture(&root).unwrap(),
    )
    .mdev_devices[0]
        .uuid
        .clone();
    let (code, mdev, err) = agent(&[
        "--host-root",
        root.to_str().unwrap(),
        "export",
        "libvirt",
        "--gpu-device",
        &uuid,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        mdev.contains(&format!("<address uuid='{uuid}'/>")),
        "{mdev}"
    );
    let (code, _, err) = agent(&[
        "--host-root",
        root.to_str().unwrap(),
        "export",
        "libvirt",
        "--gpu-device",
        "0000:99:00.0",
    ]);
    assert_eq!(code, 3);
    assert!(err.contains("0000:99:00.0"), "{err}");
    // A broken element must fail the validator, so a pass means something.
    let broken = "<hostdev mode='subsystem' type='pci' managed='no'><source><address bus='zz'/></source></hostdev>\n";
    for (xml, valid) in [(pci.as_str(), true), (mdev.as_str(), true), (broken, false)] {
        match virt_xml_validate(&domain_with(xml)) {
            None => panic!(
                "virt-xml-validate is not installed (Debian: libvirt-clients, which \
                 .ci/install-deps installs): the libvirt XML cannot be validated"
            ),
            Some(r) => assert_eq!(r.is_ok(), valid, "{xml}: {r:?}"),
        }
    }
}
