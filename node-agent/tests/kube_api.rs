//! The DRA driver's API-server side (`dra::kube::KubeDra`) against a **mock API server**: an
//! in-process `tower` service handed to `kube::Client::new` (as kube's own tests do) that
//! answers like the API server for the few requests the driver makes: Nodes (get),
//! ResourceSlices (list with field selectors, create, replace with resourceVersion
//! preconditions, delete) and ResourceClaims (get). It keeps objects as JSON, checks every
//! written ResourceSlice by deserialising it into k8s-openapi's typed `ResourceSlice` and
//! validating it against `resource.k8s.io/v1`'s limits (its own checks, not the driver's),
//! answers 409/404/422 as the API server does, and records every request. No cluster was
//! available; this is what the tests stand on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::client::Body;
use serde_json::{json, Value};
use vm_device_agent::dra::api::{ClaimRef, ClaimSource, Publisher};
use vm_device_agent::dra::devices::{Attr, DraDevice, DraKind};
use vm_device_agent::dra::kube::{KubeDra, KubeError};
use vm_device_agent::dra::DRIVER_NAME;

const NODE: &str = "node-a";
const NODE_UID: &str = "6a1f3c2e-node-a";
const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";

/// One request as the mock server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Value>,
    slices: BTreeMap<String, Value>,
    claims: BTreeMap<(String, String), Value>,
    seen: Vec<Seen>,
    /// Writes refused as invalid (what the API server's validation would say).
    invalid: Vec<String>,
    /// The next N writes answer 409 Conflict, as if another writer won the race.
    conflicts: usize,
    next_rv: u64,
    next_uid: u64,
}

#[derive(Clone, Default)]
struct MockApiServer(Arc<Mutex<State>>);

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A ResourceSlice field selector as the API server applies it (`spec.driver`,
/// `spec.nodeName`, `spec.pool.name`, `metadata.name`; `=`, `==`, `!=`), or the 400 it
/// answers for a field it does not index.
fn selects(selector: &str, slice: &Value) -> Result<bool, String> {
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (key, want, negate) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, false)
        } else {
            return Err(format!("invalid selector term {term:?}"));
        };
        let have = match key {
            "spec.driver" => &slice["spec"]["driver"],
            "spec.nodeName" => &slice["spec"]["nodeName"],
            "spec.pool.name" => &slice["spec"]["pool"]["name"],
            "metadata.name" => &slice["metadata"]["name"],
            other => return Err(format!("field label not supported: {other}")),
        };
        if (have.as_str().unwrap_or("") == want) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

fn label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

fn qualified(name: &str) -> bool {
    let (domain, id) = name.split_once('/').unwrap_or(("", name));
    let domain_ok =
        domain.is_empty() && !name.contains('/') || domain.len() <= 63 && subdomain(domain);
    let mut c = id.chars();
    let id_ok = id.len() <= 32
        && c.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_');
    domain_ok && id_ok
}

/// `resource.k8s.io/v1`'s validation of what the driver writes, as far as the driver uses it.
fn validate(s: &ResourceSlice) -> Vec<String> {
    let mut bad = Vec::new();
    let name = s.metadata.name.clone().unwrap_or_default();
    if !subdomain(&name) {
        bad.push(format!("metadata.name {name:?}"));
    }
    let spec = &s.spec;
    if !subdomain(&spec.driver) {
        bad.push(format!("spec.driver {:?}", spec.driver));
    }
    let scopes = [
        spec.node_name.is_some(),
        spec.node_selector.is_some(),
        spec.all_nodes == Some(true),
        spec.per_device_node_selection == Some(true),
    ];
    if scopes.iter().filter(|x| **x).count() != 1 {
        bad.push("exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection".into());
    }
    if spec.pool.name.is_empty() || spec.pool.name.len() > 253 {
        bad.push("spec.pool.name".into());
    }
    if spec.pool.generation < 0 || spec.pool.resource_slice_count <= 0 {
        bad.push("spec.pool generation/resourceSliceCount".into());
    }
    let devices = spec.devices.clone().unwrap_or_default();
    if devices.len() > 128 {
        bad.push(format!("{} devices, more than 128", devices.len()));
    }
    let mut names = std::collections::BTreeSet::new();
    for d in &devices {
        if !label(&d.name) || !names.insert(d.name.clone()) {
            bad.push(format!("device name {:?}", d.name));
        }
        let attrs = d.attributes.clone().unwrap_or_default();
        let caps = d.capacity.clone().unwrap_or_default();
        if attrs.len() + caps.len() > 32 {
            bad.push(format!(
                "device {}: more than 32 attributes+capacities",
                d.name
            ));
        }
        for (k, a) in &attrs {
            let n = [
                a.int.is_some(),
                a.bool.is_some(),
                a.string.is_some(),
                a.version.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let long = a
                .string
                .as_ref()
                .or(a.version.as_ref())
                .is_some_and(|v| v.chars().count() > 64);
            if !qualified(k) || n != 1 || long {
                bad.push(format!("device {}: attribute {k}", d.name));
            }
        }
        for k in caps.keys() {
            if !qualified(k) {
                bad.push(format!("device {}: capacity {k}", d.name));
            }
        }
    }
    bad
}

/// The API server stores quantities in its own spelling: `16Gi` comes back as the byte
/// count (the same value), so a driver comparing strings would rewrite its slices forever.
fn respell_quantities(v: &mut Value) {
    if let Some(devices) = v["spec"]["devices"].as_array_mut() {
        for d in devices {
            if let Some(caps) = d["capacity"].as_object_mut() {
                for c in caps.values_mut() {
                    if let Some(q) = c["value"].as_str() {
                        if let Some(gi) = q.strip_suffix("Gi").and_then(|n| n.parse::<u64>().ok()) {
                            c["value"] = json!((gi << 30).to_string());
                        }
                    }
                }
            }
        }
    }
}

impl MockApiServer {
    fn new() -> Self {
        let s = MockApiServer::default();
        s.0.lock().unwrap().nodes.insert(
            NODE.into(),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": NODE, "uid": NODE_UID, "resourceVersion": "1"}}),
        );
        s
    }

    fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Stores `slice` as if another party had created it.
    fn put_slice(&self, slice: Value) {
        let mut st = self.state();
        st.next_rv += 1;
        let mut slice = slice;
        slice["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
        slice["metadata"]["uid"] = json!(format!("uid-{}", st.next_rv));
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        st.slices.insert(name, slice);
    }

    fn put_claim(&self, ns: &str, name: &str, uid: &str, results: Option<Value>) {
        let mut claim = json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": "5"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "passthrough.gpu.vm-device.io"}}]}},
        });
        if let Some(r) = results {
            claim["status"] = json!({"allocation": {"devices": {"results": r}}});
        }
        self.state().claims.insert((ns.into(), name.into()), claim);
    }

    fn slices_of(&self, driver: &str, node: &str) -> Vec<ResourceSlice> {
        self.state()
            .slices
            .values()
            .filter(|s| s["spec"]["driver"] == driver && s["spec"]["nodeName"] == node)
            .map(|s| serde_json::from_value(s.clone()).unwrap())
            .collect()
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state().seen)
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.unwrap();
        let mut st = self.0.lock().unwrap();
        let path = parts.uri.path().to_string();
        let q = query(parts.uri.query());
        st.seen.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            query: q.clone(),
        });
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&parts.method, segs.as_slice()) {
            (&Method::GET, ["api", "v1", "nodes", name]) => match st.nodes.get(*name) {
                Some(n) => ok(n),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("nodes \"{name}\" not found"),
                ),
            },
            (
                &Method::GET,
                ["apis", "resource.k8s.io", "v1", "namespaces", ns, "resourceclaims", name],
            ) => match st.claims.get(&(ns.to_string(), name.to_string())) {
                Some(c) => ok(c),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("resourceclaims.resource.k8s.io \"{name}\" not found"),
                ),
            },
            (&Method::GET, ["apis", "resource.k8s.io", "v1", "resourceslices"]) => {
                let selector = q.get("fieldSelector").cloned().unwrap_or_default();
                let mut items = Vec::new();
                for s in st.slices.values() {
                    match selects(&selector, s) {
                        Ok(true) => items.push(s.clone()),
                        Ok(false) => {}
                        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
                    }
                }
                let rv = st.next_rv.to_string();
                ok(
                    &json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                           "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            (
                m @ (&Method::POST | &Method::PUT),
                ["apis", "resource.k8s.io", "v1", "resourceslices", rest @ ..],
            ) => {
                let typed: ResourceSlice = match serde_json::from_slice(&body) {
                    Ok(t) => t,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
                };
                let bad = validate(&typed);
                if !bad.is_empty() {
                    st.invalid.extend(bad.iter().cloned());
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", bad.join("; "));
                }
                if st.conflicts > 0 {
                    st.conflicts -= 1;
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again".into(),
                    );
                }
                let name = typed.metadata.name.clone().unwrap_or_default();
                let mut v: Value = serde_json::from_slice(&body).unwrap();
                respell_quantities(&mut v);
                st.next_rv += 1;
                let rv = st.next_rv.to_string();
                if m == Method::POST {
                    if !rest.is_empty() {
                        return status(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "MethodNotAllowed",
                            "POST to a name".into(),
                        );
                    }
                    if st.slices.contains_key(&name) {
                        return status(
                            StatusCode::CONFLICT,
                            "AlreadyExists",
                            format!("resourceslices.resource.k8s.io \"{name}\" already exists"),
                        );
                    }
                    st.next_uid += 1;
                    v["metadata"]["uid"] = json!(format!("slice-uid-{}", st.next_uid));
                } else {
                    if rest != [name.as_str()] {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "name in path and body differ".into(),
                        );
                    }
                    let Some(old) = st.slices.get(&name).cloned() else {
                        return status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            format!("resourceslices \"{name}\" not found"),
                        );
                    };
                    if v["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            "resourceVersion differs".into(),
                        );
                    }
                    for f in ["driver", "nodeName"] {
                        if v["spec"][f] != old["spec"][f] {
                            st.invalid.push(format!("spec.{f} is immutable"));
                            return status(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "Invalid",
                                format!("spec.{f}: field is immutable"),
                            );
                        }
                    }
                    if v["spec"]["pool"]["name"] != old["spec"]["pool"]["name"] {
                        st.invalid.push("spec.pool.name is immutable".into());
                        return status(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            "spec.pool.name: field is immutable".into(),
                        );
                    }
                    v["metadata"]["uid"] = old["metadata"]["uid"].clone();
                }
                v["metadata"]["resourceVersion"] = json!(rv);
                v["metadata"]["creationTimestamp"] = json!("2026-12-06T05:00:00Z");
                st.slices.insert(name, v.clone());
                ok(&v)
            }
            (&Method::DELETE, ["apis", "resource.k8s.io", "v1", "resourceslices", name]) => {
                let Some(old) = st.slices.get(*name).cloned() else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("resourceslices \"{name}\" not found"),
                    );
                };
                let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let want_uid = &opts["preconditions"]["uid"];
                if !want_uid.is_null() && *want_uid != old["metadata"]["uid"] {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "precondition failed: UID differs".into(),
                    );
                }
                st.slices.remove(*name);
                ok(&old)
            }
            _ => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find {} {path}", parts.method),
            ),
        }
    }
}

fn gpu(i: u32) -> DraDevice {
    let address = format!("0000:{:02x}:00.0", i % 256).parse().unwrap();
    DraDevice {
        name: format!("gpu-{i:04}"),
        kind: DraKind::Gpu {
            address,
            companions: Vec::new(),
        },
        attributes: BTreeMap::from([
            ("rung".to_string(), Attr::String("passthrough".into())),
            (
                "resource.kubernetes.io/pciBusID".to_string(),
                Attr::String(format!("0000:{:02x}:00.0", i % 256)),
            ),
            ("numaNode".to_string(), Attr::Int(i64::from(i % 2))),
            ("vendorID".to_string(), Attr::String("10de".into())),
        ]),
        capacity: BTreeMap::from([("memory".to_string(), 80u64 << 30)]),
    }
}

fn devices(n: u32) -> Vec<DraDevice> {
    (0..n).map(gpu).collect()
}

fn writes(seen: &[Seen]) -> Vec<(Method, String)> {
    seen.iter()
        .filter(|s| s.method != Method::GET)
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect()
}

fn slice_path(i: usize) -> String {
    format!("{SLICES}/{NODE}-{DRIVER_NAME}-{i}")
}

/// Mock API server: publication creates the slices (owned by the Node, listed with the
/// driver's and node's field selectors), writes nothing when nothing changed, replaces all
/// of them with a new generation on a change, and deletes the surplus when the node shrinks;
/// other drivers' and nodes' slices are never touched.
#[tokio::test]
async fn publication_creates_updates_on_change_and_deletes_the_surplus() {
    let server = MockApiServer::new();
    let others = [
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
               "metadata": {"name": "node-a-other-0"},
               "spec": {"driver": "other.example.com", "nodeName": NODE,
                        "pool": {"name": NODE, "generation": 4, "resourceSliceCount": 1}, "devices": []}}),
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
               "metadata": {"name": "node-b-gpu.vm-device.io-0"},
               "spec": {"driver": DRIVER_NAME, "nodeName": "node-b",
                        "pool": {"name": "node-b", "generation": 9, "resourceSliceCount": 1}, "devices": []}}),
    ];
    for o in &others {
        server.put_slice(o.clone());
    }
    let before_others: Vec<Value> = server.state().slices.values().cloned().collect();
    let dra = KubeDra::new(server.client(), NODE).unwrap();

    // 300 devices: three slices of one pool at generation 1.
    let report = dra.publish_slices(&devices(300)).await.unwrap();
    assert_eq!(report.generation, 1);
    assert_eq!(report.created.len(), 3, "{report:?}");
    assert!(report.skipped.is_empty());
    let seen = server.take_seen();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, format!("/api/v1/nodes/{NODE}"));
    let list = seen
        .iter()
        .find(|s| s.method == Method::GET && s.path == SLICES)
        .expect("a list of the slices");
    let selector = &list.query["fieldSelector"];
    let mut terms: Vec<&str> = selector.split(',').collect();
    terms.sort();
    assert_eq!(
        terms,
        [
            format!("spec.driver={DRIVER_NAME}"),
            format!("spec.nodeName={NODE}")
        ]
    );
    assert_eq!(
        writes(&seen),
        (0..3)
            .map(|_| (Method::POST, SLICES.to_string()))
            .collect::<Vec<_>>()
    );
    let mine = server.slices_of(DRIVER_NAME, NODE);
    assert_eq!(mine.len(), 3);
    let mut all = std::collections::BTreeSet::new();
    for s in &mine {
        assert_eq!(s.spec.pool.name, NODE);
        assert_eq!(s.spec.pool.generation, 1);
        assert_eq!(s.spec.pool.resource_slice_count, 3);
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", NODE, NODE_UID)
        );
        assert_eq!(owner.controller, Some(true));
        all.extend(s.spec.devices.iter().flatten().map(|d| d.name.clone()));
    }
    assert_eq!(all.len(), 300);

    // Unchanged (the server respelled 80Gi as a byte count): nothing written.
    let report = dra.publish_slices(&devices(300)).await.unwrap();
    assert!(report.unchanged(), "{report:?}");
    assert_eq!(report.generation, 1);
    let seen = server.take_seen();
    assert!(writes(&seen).is_empty(), "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.path != format!("/api/v1/nodes/{NODE}")),
        "the Node is read once"
    );

    // One device changes: every slice of the pool moves to generation 2.
    let mut changed = devices(300);
    changed[7]
        .attributes
        .insert("numaNode".into(), Attr::Int(5));
    let report = dra.publish_slices(&changed).await.unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.updated.len(), 3, "{report:?}");
    assert_eq!(
        writes(&server.take_seen()),
        (0..3)
            .map(|i| (Method::PUT, slice_path(i)))
            .collect::<Vec<_>>()
    );
    for s in server.slices_of(DRIVER_NAME, NODE) {
        assert_eq!(s.spec.pool.generation, 2);
    }

    // The node shrinks to 100 devices: one slice, two deleted.
    let report = dra.publish_slices(&devices(100)).await.unwrap();
    assert_eq!(report.generation, 3);
    assert_eq!(
        writes(&server.take_seen()),
        [
            (Method::PUT, slice_path(0)),
            (Method::DELETE, slice_path(1)),
            (Method::DELETE, slice_path(2)),
        ]
    );
    let mine = server.slices_of(DRIVER_NAME, NODE);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].spec.pool.resource_slice_count, 1);
    assert_eq!(mine[0].spec.devices.as_ref().unwrap().len(), 100);

    // Nothing left to offer: no slice.
    let report = dra.publish_slices(&[]).await.unwrap();
    assert_eq!(report.deleted, [format!("{NODE}-{DRIVER_NAME}-0")]);
    assert!(server.slices_of(DRIVER_NAME, NODE).is_empty());

    let after_others: Vec<Value> = server.state().slices.values().cloned().collect();
    assert_eq!(
        after_others, before_others,
        "other drivers' and nodes' slices untouched"
    );
    assert!(
        server.state().invalid.is_empty(),
        "{:?}",
        server.state().invalid
    );
}

/// Mock API server: a slice of this driver and node under another name (left by an older
/// agent, or made with generateName) is deleted, and one whose pool name differs (immutable)
/// is deleted and created again rather than replaced.
#[tokio::test]
async fn stray_and_immutably_different_slices_are_replaced() {
    let server = MockApiServer::new();
    server.put_slice(
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "node-a-gpu.vm-device.io-x7k2p"},
        "spec": {"driver": DRIVER_NAME, "nodeName": NODE,
                 "pool": {"name": NODE, "generation": 6, "resourceSliceCount": 2}, "devices": []}}),
    );
    server.put_slice(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": format!("{NODE}-{DRIVER_NAME}-0")},
        "spec": {"driver": DRIVER_NAME, "nodeName": NODE,
                 "pool": {"name": "old-pool", "generation": 6, "resourceSliceCount": 2}, "devices": []}}));
    let dra = KubeDra::new(server.client(), NODE).unwrap();
    let report = dra.publish_slices(&devices(3)).await.unwrap();
    assert_eq!(report.generation, 7, "past the highest generation seen");
    assert_eq!(
        writes(&server.take_seen()),
        [
            (Method::DELETE, slice_path(0)),
            (Method::POST, SLICES.to_string()),
            (
                Method::DELETE,
                format!("{SLICES}/node-a-gpu.vm-device.io-x7k2p")
            ),
        ]
    );
    let mine = server.slices_of(DRIVER_NAME, NODE);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].spec.pool.name, NODE);
    assert!(
        server.state().invalid.is_empty(),
        "{:?}",
        server.state().invalid
    );
}

/// Mock API server: a write that loses a race (409) is retried after a fresh list; one that
/// keeps losing ends in a clear error after a bounded number of attempts, without hanging.
#[tokio::test]
async fn lost_races_are_retried_a_bounded_number_of_times() {
    let server = MockApiServer::new();
    let dra = KubeDra::new(server.client(), NODE).unwrap();
    server.state().conflicts = 1;
    let report = dra.publish_slices(&devices(2)).await.unwrap();
    assert_eq!(report.created.len(), 1);
    let lists = server
        .take_seen()
        .iter()
        .filter(|s| s.method == Method::GET && s.path == SLICES)
        .count();
    assert_eq!(lists, 2, "re-listed after the conflict");
    assert_eq!(server.slices_of(DRIVER_NAME, NODE).len(), 1);

    server.state().conflicts = 100;
    let err = dra.publish_slices(&devices(3)).await.unwrap_err();
    assert!(matches!(err, KubeError::Conflicts { .. }), "{err}");
    assert!(err.to_string().contains(NODE), "{err}");
}

/// Mock API server: without its Node (RBAC, or a wrong NODE_NAME) publication fails before
/// writing anything, naming what it tried to read; bad input is refused before any request.
#[tokio::test]
async fn publication_errors_are_clear() {
    let server = MockApiServer::new();
    let dra = KubeDra::new(server.client(), "node-z").unwrap();
    let err = dra.publish_slices(&devices(1)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("reading Node node-z") && msg.contains("404"),
        "{msg}"
    );
    assert!(writes(&server.take_seen()).is_empty());

    let dra = KubeDra::new(server.client(), NODE).unwrap();
    let twice = [gpu(1), gpu(1)];
    let err = dra.publish_slices(&twice).await.unwrap_err();
    assert!(err.to_string().contains("gpu-0001"), "{err}");
    assert!(server.take_seen().is_empty(), "no request for bad input");

    assert!(KubeDra::new(server.client(), "Node_A").is_err());
}

/// Mock API server: a device the API would refuse is left out and the others published.
#[tokio::test]
async fn a_device_over_the_limits_does_not_hide_the_others() {
    let server = MockApiServer::new();
    let dra = KubeDra::new(server.client(), NODE).unwrap();
    let mut list = devices(3);
    for i in 0..40 {
        list[1].attributes.insert(format!("extra{i}"), Attr::Int(i));
    }
    let report = dra.publish_slices(&list).await.unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].device, "gpu-0001");
    let names: Vec<String> = server.slices_of(DRIVER_NAME, NODE)[0]
        .spec
        .devices
        .iter()
        .flatten()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(names, ["gpu-0000", "gpu-0002"]);
    // Through the trait the agent uses: the same, as Ok.
    let publisher: &dyn Publisher = &dra;
    publisher.publish(&list).await.unwrap();
    assert!(
        server.state().invalid.is_empty(),
        "{:?}",
        server.state().invalid
    );
}

fn claim(ns: &str, name: &str, uid: &str) -> ClaimRef {
    ClaimRef {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

/// Mock API server: a claim's allocation yields this driver's devices in this node's pool
/// only; a missing claim, another UID, no allocation, an allocation on another node or of
/// another driver, and a malformed reference each give their own clear error.
#[tokio::test]
async fn claims_are_read_and_checked() {
    let server = MockApiServer::new();
    server.put_claim(
        "vms",
        "gpu-claim",
        "uid-1",
        Some(json!([
            {"request": "gpu", "driver": DRIVER_NAME, "pool": NODE, "device": "gpu-0000-86-00-0"},
            {"request": "gpu", "driver": "other.example.com", "pool": NODE, "device": "x"},
            {"request": "nic", "driver": DRIVER_NAME, "pool": "node-b", "device": "gpu-0000-03-00-0"},
            {"request": "audio", "driver": DRIVER_NAME, "pool": NODE, "device": "vf-0000-03-00-4"},
        ])),
    );
    server.put_claim("vms", "pending", "uid-2", None);
    server.put_claim(
        "vms",
        "elsewhere",
        "uid-3",
        Some(json!([
            {"request": "gpu", "driver": DRIVER_NAME, "pool": "node-b", "device": "gpu-0000-86-00-0"},
        ])),
    );
    server.put_claim(
        "vms",
        "foreign",
        "uid-4",
        Some(json!([
            {"request": "gpu", "driver": "gpu.nvidia.com", "pool": NODE, "device": "gpu-0"},
        ])),
    );
    let dra = KubeDra::new(server.client(), NODE).unwrap();

    let got = dra
        .claim_devices(&claim("vms", "gpu-claim", "uid-1"))
        .await
        .unwrap();
    let got: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|a| (a.request.as_str(), a.pool.as_str(), a.device.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("gpu", NODE, "gpu-0000-86-00-0"),
            ("audio", NODE, "vf-0000-03-00-4")
        ]
    );
    let seen = server.take_seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (
            Method::GET,
            "/apis/resource.k8s.io/v1/namespaces/vms/resourceclaims/gpu-claim"
        )
    );

    let err = dra
        .claim_devices(&claim("vms", "gpu-claim", "uid-old"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KubeError::UidMismatch { found, wanted, .. } if found == "uid-1" && wanted == "uid-old"),
        "{err}"
    );
    assert!(
        err.to_string().contains("deleted and created again"),
        "{err}"
    );

    let err = dra
        .claim_devices(&claim("vms", "gone", "uid-9"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, KubeError::ClaimNotFound(ref c) if c == "vms/gone"),
        "{err}"
    );

    let err = dra
        .claim_devices(&claim("vms", "pending", "uid-2"))
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::NotAllocated(_)), "{err}");
    assert!(err.to_string().contains("not allocated"), "{err}");

    let err = dra
        .claim_devices(&claim("vms", "elsewhere", "uid-3"))
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::NotHere { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pool {NODE}")) && msg.contains("node-b/gpu-0000-86-00-0"),
        "{msg}"
    );

    let err = dra
        .claim_devices(&claim("vms", "foreign", "uid-4"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("gpu.nvidia.com/node-a/gpu-0"),
        "{err}"
    );

    server.take_seen();
    for (ns, name) in [("vms", "a/../../b"), ("", "x"), ("VMs", "x")] {
        let err = dra.claim_devices(&claim(ns, name, "u")).await.unwrap_err();
        assert!(matches!(err, KubeError::BadClaimRef(_)), "{err}");
    }
    assert!(
        server.take_seen().is_empty(),
        "no request for a malformed reference"
    );

    // Through the trait kubelet's side uses.
    let source: &dyn ClaimSource = &dra;
    let err = source
        .allocated(&claim("vms", "gpu-claim", "uid-x"))
        .await
        .unwrap_err();
    assert!(err.contains("uid-x") && err.contains("uid-1"), "{err}");
    assert_eq!(
        source
            .allocated(&claim("vms", "gpu-claim", "uid-1"))
            .await
            .unwrap()
            .len(),
        2
    );
}

/// The constructor from a kubeconfig file builds a real client (rustls on ring); with no API
/// server listening a request fails with an error rather than hanging. No node name and no
/// NODE_NAME is refused.
#[tokio::test]
async fn connect_reads_a_kubeconfig_and_needs_a_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n\
         clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t0ken}}]\n\
         contexts: [{name: t, context: {cluster: c, user: u}}]\n",
    )
    .unwrap();
    let dra = KubeDra::connect(Some(&path), Some(NODE.into()))
        .await
        .unwrap();
    assert_eq!(dra.node(), NODE);
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        dra.claim_devices(&claim("vms", "c", "u")),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap_err();
    assert!(
        err.to_string().contains("reading ResourceClaim vms/c"),
        "{err}"
    );

    let err = KubeDra::connect(Some(&dir.path().join("missing")), Some(NODE.into()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing"), "{err}");

    std::env::remove_var("NODE_NAME");
    let err = KubeDra::connect(Some(&path), None).await.err().unwrap();
    assert!(matches!(err, KubeError::NoNodeName), "{err}");
}

/// Mock API server: every recorded and synthetic host's DRA devices (`dra::devices` on the
/// rungs' candidates, as the driver computes them) are published whole: the mock API
/// server's validation accepts every slice and no device is left out.
#[tokio::test]
async fn every_fixture_hosts_devices_publish_within_the_limits() {
    use vm_device::gpu_manager::UnifiedGpuManager;
    use vm_device::ladder::GpuMode;
    use vm_device_sim::SimHost;

    let hosts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hosts");
    let mut entries: Vec<_> = std::fs::read_dir(&hosts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    let mut published_somewhere = 0;
    for host in entries {
        let Ok(sim) = SimHost::from_fixture(&host) else {
            continue;
        };
        let mut m = UnifiedGpuManager::with_host(Arc::new(sim));
        m.scan_backends().unwrap();
        let mut candidates = Vec::new();
        for mode in [GpuMode::Passthrough, GpuMode::Mdev, GpuMode::Wgpu] {
            candidates.extend_from_slice(m.candidates(mode).unwrap());
        }
        let inv = m.inventory().unwrap().clone();
        let devices = vm_device_agent::dra::devices::devices(&inv, &candidates, 4, &[]);

        let server = MockApiServer::new();
        let dra = KubeDra::new(server.client(), NODE).unwrap();
        let report = dra
            .publish_slices(&devices)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        assert!(
            report.skipped.is_empty(),
            "{}: {:?}",
            host.display(),
            report.skipped
        );
        assert!(
            server.state().invalid.is_empty(),
            "{}: {:?}",
            host.display(),
            server.state().invalid
        );
        let mut published: Vec<String> = server
            .slices_of(DRIVER_NAME, NODE)
            .iter()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .map(|d| d.name)
            .collect();
        published.sort();
        let mut wanted: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        wanted.sort();
        assert_eq!(published, wanted, "{}", host.display());
        if !published.is_empty() {
            published_somewhere += 1;
        }
    }
    assert!(
        published_somewhere >= 5,
        "{published_somewhere} hosts had devices"
    );
}

/// Mock API server: a pool of more than ten slices (names `…-10` sort before `…-2`) is
/// recognised as unchanged on the next publication and moves to the next generation as a
/// whole on a change.
#[tokio::test]
async fn a_pool_of_more_than_ten_slices_is_stable() {
    let server = MockApiServer::new();
    let dra = KubeDra::new(server.client(), NODE).unwrap();
    let list = devices(1300);
    let report = dra.publish_slices(&list).await.unwrap();
    assert_eq!(report.created.len(), 11);
    let mut names: Vec<String> = server
        .slices_of(DRIVER_NAME, NODE)
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .map(|d| d.name)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1300);
    server.take_seen();
    assert!(dra.publish_slices(&list).await.unwrap().unchanged());
    assert!(writes(&server.take_seen()).is_empty());
    let report = dra.publish_slices(&list[1..]).await.unwrap();
    assert_eq!((report.generation, report.updated.len()), (2, 11));
    for s in server.slices_of(DRIVER_NAME, NODE) {
        assert_eq!(s.spec.pool.generation, 2);
        assert_eq!(s.spec.pool.resource_slice_count, 11);
    }
}
