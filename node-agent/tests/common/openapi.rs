//! A small OpenAPI v2 validator for the vendored KubeVirt definitions (schemas/kubevirt/).

use serde_json::Value;

/// Validates `v` against definition `def` of an OpenAPI v2 document: types, required
/// properties, items, `$ref`s; an unknown property is an error (KubeVirt's structural CRD
/// schema would prune it silently, so the snippet must have none).
pub fn validate(defs: &Value, def: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = def.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/definitions/");
        let target = defs.get(name).ok_or(format!("{at}: unknown $ref {r}"))?;
        return validate(defs, target, v, at);
    }
    let ty = def.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some(other) => return Err(format!("{at}: schema type {other} not handled")),
        None => true,
    };
    if !ok {
        return Err(format!("{at}: {v} is not of type {}", ty.unwrap_or("?")));
    }
    if let Some(o) = v.as_object() {
        let props = def.get("properties").and_then(Value::as_object);
        for req in def
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !o.contains_key(req) {
                return Err(format!("{at}: required property {req} missing"));
            }
        }
        for (k, val) in o {
            let p = props
                .and_then(|p| p.get(k))
                .ok_or(format!("{at}: property {k} is not in the schema"))?;
            validate(defs, p, val, &format!("{at}.{k}"))?;
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), def.get("items")) {
        for (i, item) in a.iter().enumerate() {
            validate(defs, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
