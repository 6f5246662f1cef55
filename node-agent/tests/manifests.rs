//! The deploy/ manifests parse (serde-saphyr, the YAML parser kube's kubeconfig reading
//! already brings), every Kubernetes object deserialises into k8s-openapi's type and
//! serialises back to the same JSON (so no field is misspelt or misplaced: k8s-openapi
//! ignores unknown fields, the API server would prune them), and the pieces fit: the RBAC
//! grants what `dra::kube` requests, the DaemonSet runs as the bound ServiceAccount with
//! NODE_NAME, one DeviceClass per rung selects this driver's devices of that rung, and the
//! example claim and VM refer to each other by the right names, the VM's DRA parts valid
//! against KubeVirt's own definitions (vendored, schemas/kubevirt/NOTICE).

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaimTemplate};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vm_device_agent::dra::devices::{DraDevice, DraKind};
use vm_device_agent::dra::DRIVER_NAME;

mod common;
use common::openapi::validate;

fn docs(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `doc` as `T`, checked to say exactly what the YAML says.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, doc,
        "{} {} has fields its type does not know",
        doc["kind"], doc["metadata"]["name"]
    );
    t
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Every rung a DraDevice can have, from the model itself.
fn rungs() -> BTreeSet<&'static str> {
    let addr = "0000:01:00.0".parse().unwrap();
    [
        DraKind::Gpu {
            address: addr,
            companions: vec![],
        },
        DraKind::Vf { pf: addr, vf: addr },
        DraKind::Mdev {
            parent: "p".into(),
            type_id: "t".into(),
            slot: 0,
        },
        DraKind::NvidiaVgpu {
            vf: addr,
            type_id: 1,
        },
        DraKind::Wgpu { share: 0 },
    ]
    .into_iter()
    .map(|kind| {
        DraDevice {
            name: "d".into(),
            kind,
            attributes: Default::default(),
            capacity: Default::default(),
        }
        .rung()
    })
    .collect()
}

fn kubevirt_vmi_dra() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/kubevirt/vmi-dra.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["definitions"].clone()
}

#[test]
fn kubevirts_gpu_definition_refuses_a_misnamed_claim_field() {
    // Guards the check below: KubeVirt's GPU has claimName/requestName, nothing else.
    let defs = kubevirt_vmi_dra();
    let bad = serde_json::json!({"name": "gpu1", "claim": "gpu", "requestName": "gpu"});
    assert!(validate(&defs, &defs["v1.GPU"], &bad, "gpu").is_err());
    let good = serde_json::json!({"name": "gpu1", "claimName": "gpu", "requestName": "gpu"});
    validate(&defs, &defs["v1.GPU"], &good, "gpu").unwrap();
}

#[test]
fn daemonset_objects_are_typed_and_run_as_the_bound_service_account() {
    let ds_docs = docs("daemonset.yaml");
    for d in of_kind(&ds_docs, "ConfigMap") {
        typed::<ConfigMap>(d);
    }
    let sa: Vec<ServiceAccount> = of_kind(&ds_docs, "ServiceAccount")
        .into_iter()
        .map(typed)
        .collect();
    let ds: Vec<DaemonSet> = of_kind(&ds_docs, "DaemonSet")
        .into_iter()
        .map(typed)
        .collect();
    assert_eq!((sa.len(), ds.len()), (1, 1));
    assert_eq!(ds_docs.len(), 3, "ConfigMap, ServiceAccount, DaemonSet");
    let (sa, ds) = (&sa[0], &ds[0]);
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
    let agent = &pod.containers[0];
    let node_name = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME in the agent's environment");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));

    // dra.yaml binds the driver's role to exactly this account.
    let dra = docs("dra.yaml");
    let bindings: Vec<ClusterRoleBinding> = of_kind(&dra, "ClusterRoleBinding")
        .into_iter()
        .map(typed)
        .collect();
    let subject = &bindings[0].subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);
}

#[test]
fn the_configmap_is_a_valid_config_whose_directories_come_from_the_host() {
    let ds_docs = docs("daemonset.yaml");
    let cm: ConfigMap = typed(of_kind(&ds_docs, "ConfigMap")[0]);
    let text = &cm.data.as_ref().unwrap()["agent.json"];
    let cfg = vm_device_agent::config::Config::from_json(text).expect("agent.json parses");
    let dra = cfg.dra.as_ref().expect("the DRA driver is on");
    let ds: DaemonSet = typed(of_kind(&ds_docs, "DaemonSet")[0]);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let volumes = pod.volumes.unwrap_or_default();
    let agent = &pod.containers[0];
    // Each directory the agent serves or writes in is the host's own, at the same path.
    for dir in [
        cfg.plugin_dir.as_path(),
        dra.registry_dir.as_path(),
        dra.plugin_dir.as_path(),
        dra.cdi_dir.as_path(),
    ] {
        let dir = dir.to_str().unwrap();
        let mount = agent
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{dir} is not mounted into the agent"));
        let host = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.as_str());
        assert_eq!(host, Some(dir), "{dir} must be the host's {dir}");
    }
}

#[test]
fn the_role_grants_what_the_driver_requests() {
    let dra = docs("dra.yaml");
    let roles: Vec<ClusterRole> = of_kind(&dra, "ClusterRole")
        .into_iter()
        .map(typed)
        .collect();
    let bindings: Vec<ClusterRoleBinding> = of_kind(&dra, "ClusterRoleBinding")
        .into_iter()
        .map(typed)
        .collect();
    assert_eq!((roles.len(), bindings.len()), (1, 1));
    assert_eq!(
        Some(&bindings[0].role_ref.name),
        roles[0].metadata.name.as_ref()
    );
    assert_eq!(bindings[0].role_ref.kind, "ClusterRole");
    let allows = |group: &str, resource: &str, verb: &str| {
        roles[0].rules.iter().flatten().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    // What dra::kube sends: list/create/update(PUT)/delete of slices, get of claims and of
    // the Node; watch for a future informer.
    for verb in ["list", "watch", "create", "update", "delete"] {
        assert!(allows("resource.k8s.io", "resourceslices", verb), "{verb}");
    }
    assert!(allows("resource.k8s.io", "resourceclaims", "get"));
    assert!(allows("", "nodes", "get"));
    assert!(
        !allows("resource.k8s.io", "resourceclaims", "update"),
        "claims are only read"
    );
}

#[test]
fn one_device_class_per_rung_selects_this_drivers_devices() {
    let dra = docs("dra.yaml");
    let classes: Vec<DeviceClass> = of_kind(&dra, "DeviceClass")
        .into_iter()
        .map(typed)
        .collect();
    let mut covered = BTreeSet::new();
    for c in &classes {
        let name = c.metadata.name.clone().unwrap();
        let selectors = c.spec.selectors.as_ref().expect("selectors");
        assert_eq!(selectors.len(), 1, "{name}");
        let expr = &selectors[0]
            .cel
            .as_ref()
            .expect("a CEL selector")
            .expression;
        assert!(
            expr.contains(&format!("device.driver == '{DRIVER_NAME}'")),
            "{name}: {expr}"
        );
        let rung = rungs()
            .into_iter()
            .find(|r| expr.contains(&format!("device.attributes['{DRIVER_NAME}'].rung == '{r}'")))
            .unwrap_or_else(|| panic!("{name}: no rung test in {expr}"));
        assert_eq!(name, format!("{rung}.{DRIVER_NAME}"));
        assert!(covered.insert(rung), "two classes for {rung}");
    }
    assert_eq!(covered, rungs(), "a class for every rung");
}

#[test]
fn the_example_claim_and_vm_fit_together() {
    let classes: BTreeSet<String> = of_kind(&docs("dra.yaml"), "DeviceClass")
        .into_iter()
        .map(|d| typed::<DeviceClass>(d).metadata.name.unwrap())
        .collect();
    let ex = docs("dra-example.yaml");
    let templates: Vec<ResourceClaimTemplate> = of_kind(&ex, "ResourceClaimTemplate")
        .into_iter()
        .map(typed)
        .collect();
    assert_eq!(templates.len(), 1);
    let t = &templates[0];
    let requests = t
        .spec
        .spec
        .devices
        .as_ref()
        .unwrap()
        .requests
        .clone()
        .unwrap();
    for r in &requests {
        let exactly = r.exactly.as_ref().expect("an exact request");
        assert!(
            classes.contains(&exactly.device_class_name),
            "{}",
            exactly.device_class_name
        );
    }

    let vmis = of_kind(&ex, "VirtualMachineInstance");
    assert_eq!(vmis.len(), 1);
    let vmi = vmis[0];
    assert_eq!(vmi["apiVersion"], "kubevirt.io/v1");
    assert_eq!(
        vmi["metadata"]["namespace"],
        t.metadata.namespace.clone().unwrap().as_str()
    );
    let claims = vmi["spec"]["resourceClaims"].as_array().unwrap();
    let gpus = vmi["spec"]["domain"]["devices"]["gpus"].as_array().unwrap();
    let defs = kubevirt_vmi_dra();
    for (i, c) in claims.iter().enumerate() {
        let at = format!("spec.resourceClaims[{i}]");
        validate(
            &defs,
            &defs["v1.VirtualMachineInstanceResourceClaim"],
            c,
            &at,
        )
        .unwrap();
        let sources = ["resourceClaimName", "resourceClaimTemplateName"];
        assert_eq!(
            sources.iter().filter(|k| c.get(**k).is_some()).count(),
            1,
            "{at}"
        );
    }
    for (i, g) in gpus.iter().enumerate() {
        let at = format!("spec.domain.devices.gpus[{i}]");
        validate(&defs, &defs["v1.GPU"], g, &at).unwrap();
    }
    assert!(!gpus.is_empty());
    for g in gpus {
        assert!(
            g.get("deviceName").is_none(),
            "a DRA GPU has no device-plugin name"
        );
        let claim = claims
            .iter()
            .find(|c| c["name"] == g["claimName"])
            .unwrap_or_else(|| panic!("{} names no resourceClaims entry", g["claimName"]));
        assert_eq!(
            claim["resourceClaimTemplateName"],
            t.metadata.name.clone().unwrap().as_str()
        );
        assert!(
            requests.iter().any(|r| g["requestName"] == r.name.as_str()),
            "{} names no request of the template",
            g["requestName"]
        );
    }
}
