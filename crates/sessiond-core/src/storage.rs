//! Storage updates: the operations applied inside one atomic read-modify-write of a
//! session's `storage` (4D's `Use(Session.storage)…End use`). Each returns an error
//! and leaves the map untouched when the input does not apply.

use serde_json::{Map, Number, Value};

use crate::Error;

/// Deepest accepted path for [`increment`].
pub const MAX_PATH_DEPTH: usize = 32;

/// Applies an RFC 7396 JSON merge patch. The patch must be an object, so the storage
/// stays an object.
///
/// ```
/// use serde_json::{json, Map};
/// let mut s = Map::new();
/// sessiond_core::storage::merge_patch(&mut s, &json!({"a": {"b": 1}, "c": null})).unwrap();
/// assert_eq!(serde_json::Value::Object(s), json!({"a": {"b": 1}}));
/// ```
pub fn merge_patch(storage: &mut Map<String, Value>, patch: &Value) -> Result<(), Error> {
    if !patch.is_object() {
        return Err(Error::InvalidStorage(
            "a storage patch must be a JSON object".into(),
        ));
    }
    let mut doc = Value::Object(std::mem::take(storage));
    json_patch::merge(&mut doc, patch);
    match doc {
        Value::Object(map) => *storage = map,
        _ => unreachable!("merging an object patch keeps an object"),
    }
    Ok(())
}

/// Adds `by` to the number at a dotted `path` (`"a.b"`), creating it (and missing
/// parent objects) at 0. Integers stay integers while they fit in i64.
///
/// ```
/// use serde_json::{json, Map};
/// let mut s = Map::new();
/// let v = sessiond_core::storage::increment(&mut s, "stats.hits", &json!(2)).unwrap();
/// assert_eq!(v, json!(2));
/// assert_eq!(sessiond_core::storage::increment(&mut s, "stats.hits", &json!(0.5)).unwrap(), json!(2.5));
/// ```
pub fn increment(storage: &mut Map<String, Value>, path: &str, by: &Value) -> Result<Value, Error> {
    let Value::Number(by) = by else {
        return Err(Error::InvalidStorage("\"by\" must be a number".into()));
    };
    let segments: Vec<&str> = path.split('.').collect();
    if path.is_empty() || segments.iter().any(|s| s.is_empty()) || segments.len() > MAX_PATH_DEPTH {
        return Err(Error::InvalidStorage(format!(
            "path {path:?} must be 1 to {MAX_PATH_DEPTH} non-empty names separated by dots"
        )));
    }
    // Check first, so that a failing increment changes nothing.
    let mut cur = &*storage;
    for (i, seg) in segments.iter().enumerate() {
        match cur.get(*seg) {
            None => break,
            Some(Value::Object(m)) if i + 1 < segments.len() => cur = m,
            Some(Value::Number(_)) if i + 1 == segments.len() => {}
            Some(_) => {
                let at = segments[..=i].join(".");
                let want = if i + 1 == segments.len() {
                    "a number"
                } else {
                    "an object"
                };
                return Err(Error::InvalidStorage(format!("{at} is not {want}")));
            }
        }
    }
    let (last, parents) = segments.split_last().expect("non-empty");
    let mut map = storage;
    for seg in parents {
        map = map
            .entry((*seg).to_string())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("checked above");
    }
    let slot = map.entry((*last).to_string()).or_insert(Value::from(0));
    let current = slot.as_number().expect("checked above");
    let sum = add(current, by)?;
    *slot = Value::Number(sum.clone());
    Ok(Value::Number(sum))
}

/// Checks `storage` against the policy's size and depth limits (every write path goes
/// through this before anything is stored).
pub fn check_limits(
    storage: &Map<String, Value>,
    policy: &crate::SessionPolicy,
) -> Result<(), Error> {
    let (depth, size) = measure(storage);
    if depth > policy.max_storage_depth {
        return Err(Error::StorageTooDeep {
            limit: policy.max_storage_depth,
        });
    }
    if size > policy.max_storage_bytes {
        return Err(Error::StorageTooLarge {
            size,
            limit: policy.max_storage_bytes,
        });
    }
    Ok(())
}

/// The nesting depth of `storage` (the map itself being level 1) and the length of
/// its compact JSON text as serde_json writes it, in one walk that builds no text
/// (iterative: a deep value cannot overflow the stack here).
fn measure(storage: &Map<String, Value>) -> (usize, usize) {
    let mut deepest = 1;
    let mut size = object_size(storage);
    let mut stack: Vec<(&Value, usize)> = storage.values().map(|v| (v, 2)).collect();
    while let Some((v, level)) = stack.pop() {
        size += match v {
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => number_size(n),
            Value::String(s) => string_size(s),
            Value::Array(a) => {
                deepest = deepest.max(level);
                stack.extend(a.iter().map(|c| (c, level + 1)));
                2 + a.len().saturating_sub(1)
            }
            Value::Object(m) => {
                deepest = deepest.max(level);
                stack.extend(m.values().map(|c| (c, level + 1)));
                object_size(m)
            }
        };
    }
    (deepest, size)
}

/// An object's braces, commas, keys and colons (its values apart).
fn object_size(m: &Map<String, Value>) -> usize {
    2 + m.len().saturating_sub(1) + m.keys().map(|k| string_size(k) + 1).sum::<usize>()
}

/// A string with its quotes and escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` take
/// one byte more, other control characters five more (`\u00XX`).
fn string_size(s: &str) -> usize {
    let escaped = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\';
    // Summed without branches or an early exit, the common case (nothing to escape)
    // runs over whole vectors of bytes.
    let any = s
        .as_bytes()
        .iter()
        .map(|&b| u32::from(b < 0x20) | u32::from(b == b'"') | u32::from(b == b'\\'))
        .sum::<u32>();
    let extra = if any == 0 {
        0
    } else {
        s.bytes()
            .filter(escaped)
            .map(|b| match b {
                b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 1,
                _ => 5,
            })
            .sum()
    };
    s.len() + 2 + extra
}

/// A number as serde_json writes it.
fn number_size(n: &Number) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, n).expect("a JSON number serializes");
    count.0
}

fn add(a: &Number, b: &Number) -> Result<Number, Error> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(s) = x.checked_add(y)
    {
        return Ok(s.into());
    }
    let s = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    Number::from_f64(s)
        .ok_or_else(|| Error::InvalidStorage("the result is not a finite number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn increment_refuses_non_numbers_and_changes_nothing() {
        let mut s = json!({"a": {"b": "text"}, "n": 1})
            .as_object()
            .unwrap()
            .clone();
        let before = s.clone();
        assert!(increment(&mut s, "a.b", &json!(1)).is_err());
        assert!(increment(&mut s, "a.b.c", &json!(1)).is_err());
        assert!(increment(&mut s, "n.x", &json!(1)).is_err());
        assert!(increment(&mut s, "", &json!(1)).is_err());
        assert!(increment(&mut s, "a..b", &json!(1)).is_err());
        assert!(increment(&mut s, "n", &json!("1")).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn limits_count_depth_from_the_storage_object_and_size_as_compact_json() {
        let policy = crate::SessionPolicy {
            max_storage_depth: 3,
            max_storage_bytes: 20,
            ..crate::SessionPolicy::default()
        };
        let ok = json!({"a": {"b": [1]}});
        assert_eq!(measure(ok.as_object().unwrap()).0, 3);
        assert!(check_limits(ok.as_object().unwrap(), &policy).is_ok());
        let deep = json!({"a": {"b": [[1]]}});
        assert_eq!(
            check_limits(deep.as_object().unwrap(), &policy),
            Err(Error::StorageTooDeep { limit: 3 })
        );
        let big = json!({"k": "0123456789abcdef"});
        assert_eq!(
            check_limits(big.as_object().unwrap(), &policy),
            Err(Error::StorageTooLarge {
                size: 24,
                limit: 20
            })
        );
        assert_eq!(measure(&Map::new()), (1, 2));
    }

    fn serde_size(v: &Value) -> usize {
        serde_json::to_vec(v).unwrap().len()
    }

    #[test]
    fn measured_size_is_serde_jsons_for_every_escape_number_and_nesting() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let v = json!({
            "": "",
            every_ascii.clone(): [every_ascii, "é 😀 \u{7f} \u{2028}", "\"\\"],
            "numbers": [0, -1, i64::MIN, u64::MAX, 0.1, -2.5e-7, 1e300, 123_456.789],
            "flags": [true, false, null],
            "nested": {"a": [[], {}, [{}], {"b": [1, [2, [3]]]}]},
        });
        let (depth, size) = measure(v.as_object().unwrap());
        assert_eq!(size, serde_size(&v));
        assert_eq!(depth, 7);
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn measured_size_is_serde_jsons_for_any_storage(
            entries in proptest::collection::vec((".*", any_json()), 0..8)
        ) {
            let map: Map<String, Value> = entries.into_iter().collect();
            let v = Value::Object(map.clone());
            proptest::prop_assert_eq!(measure(&map).1, serde_size(&v));
        }
    }

    #[test]
    fn merge_patch_refuses_non_objects() {
        let mut s = Map::new();
        assert!(merge_patch(&mut s, &json!([1])).is_err());
        assert!(merge_patch(&mut s, &json!(null)).is_err());
    }
}
