//! Strategic merge patch, with the semantics of upstream apimachinery's
//! `strategicpatch.StrategicMergeMapPatch` as the API server runs it (parallel lists merged,
//! unmatched nulls ignored).
//!
//! - maps merge recursively; `null` deletes a key;
//! - lists whose field has strategy `merge` and a merge key merge item by item on that key;
//!   with `merge` and no key (lists of strings) they are unioned; all other lists are replaced;
//! - directives: `$patch: replace|delete|merge` in maps and list items, `$retainKeys`,
//!   `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`.
//!
//! Deliberate differences from upstream, all lenient: `$patch: merge` is accepted as the
//! no-op it names (upstream rejects it); items and keys that are new to the object are merged
//! into an empty value, so directives and nulls inside them never reach the stored object;
//! fields unknown to the schema merge like free-form maps instead of failing.

use serde_json::{Map, Value};

use super::PatchError;
use super::merge_keys::{MapKey, PatchMeta};
use super::schema::TypeNode;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Merges `patch` into `original`, where both are objects of the type at `node`.
pub(crate) fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    node: TypeNode<'_>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            // The patch is the whole new value; merged into nothing to drop its own directives.
            Some("replace") => return merge_map(Map::new(), patch, node),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::BadRequest(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(patch)
                )));
            }
        }
    }

    if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
        retain_keys(&mut original, &patch, retain)?;
    }

    merge_parallel_lists(&mut original, &mut patch, node)?;

    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            delete_from_primitive_list(&mut original, field, value)?;
            continue;
        }
        if value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let child = node.field(&key);
        let meta = node.meta(&key);
        let merged = match (original.get_mut(&key).map(Value::take), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                if meta.is_some_and(|m| m.strategy == "replace") {
                    Value::Object(merge_map(Map::new(), p, child)?)
                } else {
                    Value::Object(merge_map(o, p, child)?)
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(merge_list(o, p, child.items(), meta, &key)?)
            }
            // Absent, or of another JSON type: the patch value, cleaned of directives.
            (_, value) => fresh(value, child, meta, &key)?,
        };
        original.insert(key, merged);
    }
    Ok(original)
}

/// A patch value for a key the object does not have (yet).
fn fresh(
    value: Value,
    node: TypeNode<'_>,
    meta: Option<PatchMeta>,
    field: &str,
) -> Result<Value, PatchError> {
    Ok(match value {
        Value::Object(p) => Value::Object(merge_map(Map::new(), p, node)?),
        Value::Array(p) => Value::Array(merge_list(Vec::new(), p, node.items(), meta, field)?),
        scalar => scalar,
    })
}

/// `$retainKeys`: keys of the original not listed are cleared (a union member switched,
/// e.g. a volume from `emptyDir` to `hostPath`, or a deployment strategy type).
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: Value,
) -> Result<(), PatchError> {
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadRequest(
            "invalid patch format of retainKeys".into(),
        ));
    };
    let listed = |key: &str| retain.iter().any(|r| r.as_str() == Some(key));
    for (key, value) in patch {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(key) {
            return Err(PatchError::Invalid(format!(
                "patch content doesn't match retainKeys list: {key:?} is not in {}",
                Value::Array(retain.clone())
            )));
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: removes every listed value from a primitive list.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    field: &str,
    value: Value,
) -> Result<(), PatchError> {
    let Value::Array(delete) = value else {
        return Err(PatchError::BadRequest(format!(
            "invalid patch format of primitive list: {DELETE_FROM_PRIMITIVE_LIST}{field} must be a list"
        )));
    };
    if let Some(Value::Array(list)) = original.get_mut(field) {
        list.retain(|item| !delete.contains(item));
    }
    Ok(())
}

/// `$setElementOrder/<field>` with its parallel list `<field>`: merges the list and orders
/// the result. Precedence: the order list, then the patch list, then the live list.
fn merge_parallel_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    node: TypeNode<'_>,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let field = &directive[SET_ELEMENT_ORDER.len()..];
        let Some(Value::Array(order)) = patch.shift_remove(&directive) else {
            return Err(PatchError::BadRequest(format!(
                "invalid patch format of setElementOrder list: {directive} must be a list"
            )));
        };
        let patch_list = match patch.shift_remove(field) {
            None => Vec::new(),
            Some(Value::Array(list)) => list,
            // `null` deletes the field; the order is moot.
            Some(Value::Null) => {
                patch.insert(field.to_string(), Value::Null);
                continue;
            }
            Some(other) => {
                return Err(PatchError::BadRequest(format!(
                    "invalid patch format of setElementOrder list: {field} must be a list, got {other}"
                )));
            }
        };
        let meta = node.meta(field);
        let identity = Identity::of(meta);
        validate_order(&patch_list, &order, identity, field)?;
        let live = match original.get(field) {
            Some(Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        let existed = original.contains_key(field);
        let merged = if patch_list.is_empty() {
            live.clone()
        } else {
            merge_list(
                live.clone(),
                patch_list,
                node.field(field).items(),
                meta,
                field,
            )?
        };
        let merged = normalize_order(merged, &order, &live, identity);
        if existed || !merged.is_empty() {
            original.insert(field.to_string(), Value::Array(merged));
        }
    }
    Ok(())
}

/// Every item of the patch list must appear in the order list, in the same relative order.
fn validate_order(
    patch_list: &[Value],
    order: &[Value],
    identity: Identity,
    field: &str,
) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch_list
        .iter()
        .filter(|item| !is_directive_item(item))
        .collect();
    let mut o = 0;
    for item in items {
        let id = identity.id(item);
        while o < order.len() && identity.id(&order[o]) != id {
            o += 1;
        }
        if o == order.len() {
            return Err(PatchError::BadRequest(format!(
                "invalid patch format of setElementOrder list: the order of {field} in the patch {} does not match {SET_ELEMENT_ORDER}{field} {}",
                Value::Array(patch_list.to_vec()),
                Value::Array(order.to_vec())
            )));
        }
        o += 1;
    }
    Ok(())
}

fn is_directive_item(item: &Value) -> bool {
    item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

/// What identifies the items of a list: the merge key (or, under server-side apply, the
/// list-map keys) for lists of objects, else the item itself.
#[derive(Clone, Copy, Default)]
struct Identity {
    key: Option<&'static str>,
    map_keys: &'static [MapKey],
}

impl Identity {
    fn of(meta: Option<PatchMeta>) -> Self {
        meta.map(|m| Identity {
            key: m.merge_key,
            map_keys: m.map_keys,
        })
        .unwrap_or_default()
    }

    fn id(&self, item: &Value) -> Option<Value> {
        let (Some(key), Value::Object(m)) = (self.key, item) else {
            return Some(item.clone());
        };
        if self.map_keys.is_empty() {
            return m.get(key).cloned();
        }
        self.map_keys
            .iter()
            .map(|k| {
                m.get(k.field)
                    .cloned()
                    .or_else(|| k.default.map(Value::from))
            })
            .collect::<Option<Vec<Value>>>()
            .map(Value::Array)
    }
}

/// Merges a patch list into a live list, given the field's patch strategy.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    item_node: TypeNode<'_>,
    meta: Option<PatchMeta>,
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    if !meta.is_some_and(|m| m.merges()) {
        return Ok(patch);
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if patch.iter().chain(&original).any(Value::is_array) {
        return Err(PatchError::Invalid(format!(
            "lists of lists are not supported: {field}"
        )));
    }
    let objects = patch
        .iter()
        .chain(&original)
        .find(|v| !is_directive_item(v))
        .is_some_and(Value::is_object);
    if !objects {
        return Ok(merge_primitive_list(original, patch));
    }
    let Some(key) = meta.and_then(|m| m.merge_key) else {
        return Err(PatchError::BadRequest(format!(
            "cannot merge lists without merge key for {field}"
        )));
    };
    let identity = Identity::of(meta);

    // Special items first: deletions by key, a replace of the whole list.
    let mut live = original;
    let mut items = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let mut map = match item {
            Value::Object(map) => map,
            other => {
                return Err(PatchError::BadRequest(format!(
                    "invalid patch item in {field}: {other} is not an object"
                )));
            }
        };
        let Some(directive) = map.get(DIRECTIVE).cloned() else {
            items.push(map);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                if !map.contains_key(key) {
                    return Err(no_merge_key(&map, key));
                }
                let id = identity.id(&Value::Object(map));
                live.retain(|v| identity.id(v) != id);
            }
            Some("replace") => replace = true,
            // Kept as an ordinary item when it carries the key; a bare marker is a no-op.
            Some("merge") => {
                map.shift_remove(DIRECTIVE);
                if map.contains_key(key) {
                    items.push(map);
                }
            }
            _ => {
                return Err(PatchError::BadRequest(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(map)
                )));
            }
        }
    }
    if replace {
        return items
            .into_iter()
            .map(|item| merge_map(Map::new(), item, item_node).map(Value::Object))
            .collect();
    }

    let order: Vec<Value> = items.iter().cloned().map(Value::Object).collect();
    let server_order = live.clone();
    for item in items {
        if !item.contains_key(key) {
            return Err(no_merge_key(&item, key));
        }
        let item = Value::Object(item);
        let id = identity.id(&item);
        let Value::Object(item) = item else {
            unreachable!("built as an object")
        };
        match live
            .iter_mut()
            .find(|v| v.is_object() && identity.id(v) == id)
        {
            Some(existing) => {
                let Value::Object(existing_map) = existing.take() else {
                    unreachable!("matched an object")
                };
                *existing = Value::Object(merge_map(existing_map, item, item_node)?);
            }
            None => live.push(Value::Object(merge_map(Map::new(), item, item_node)?)),
        }
    }
    Ok(normalize_order(live, &order, &server_order, identity))
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::BadRequest(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(map.clone())
    ))
}

/// Union of two lists of scalars, without duplicates.
fn merge_primitive_list(original: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    // `{"$patch": "replace"}` among the values: the patch's values are the list.
    let replace = patch
        .iter()
        .any(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    let values: Vec<Value> = patch
        .into_iter()
        .filter(|v| !is_directive_item(v))
        .collect();
    let mut merged: Vec<Value> = Vec::new();
    let all = if replace {
        values.clone()
    } else {
        original.iter().chain(&values).cloned().collect()
    };
    for v in all {
        if !merged.contains(&v) {
            merged.push(v);
        }
    }
    normalize_order(merged, &values, &original, Identity::default())
}

/// Orders a merged list: items named by `patch_order` in that order, the others (server-only)
/// in their live order, interleaved where the live order relates them.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    identity: Identity,
) -> Vec<Value> {
    let position = |list: &[Value], item: &Value| -> Option<usize> {
        let id = identity.id(item)?;
        list.iter()
            .position(|o| identity.id(o).as_ref() == Some(&id))
    };
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position(patch_order, item).is_some());
    // Stable sorts; unknown positions sort last.
    from_patch.sort_by_key(|item| position(patch_order, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| position(server_order, item).unwrap_or(usize::MAX));

    // Insert the server-only items among the patch items: a server-only item goes before the
    // next patch item only when the live list has it before that item.
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                matches!((position(server_order, l), position(server_order, r)), (Some(li), Some(ri)) if li < ri)
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}
