//! Storage updates as the service API (`PATCH …/storage`, `POST …/storage/increment`)
//! and the remote built-ins (`session.patch`, `session.increment`) apply them:
//! `sessiond_core::storage::merge_patch` and `storage::increment`, in sequence on one
//! storage, each followed by `storage::check_limits` as `Sessions::update` does (a
//! storage over the limits is refused and the update undone); the result is stored
//! as the stores do (a `SessionRecord` in JSON: the Redis form, and the embedded
//! store's `{record, lastActivity}` form).
//!
//! Input: first byte = limits (depth limit 1 + b % MAX_STORAGE_DEPTH; bit 7: a
//! 512-byte size limit instead of 1 MiB), then `\n`-separated lines: the starting
//! storage (a JSON object, else empty), then operations `p<JSON patch>` or
//! `i<path>\t<JSON by>`.
//!
//! Properties: a refused update changes nothing; `merge_patch` accepts exactly the
//! object patches and agrees with an independent RFC 7396 implementation, and
//! applying it again changes nothing; `increment` puts its result at the path,
//! keeps integers while the sum fits in i64, and touches nothing else;
//! `check_limits` agrees with the nesting depth and the compact JSON length computed
//! independently; a storage within the limits serializes, and a session record
//! holding it reads back (both forms) with exactly the same storage.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sessiond_core::policy::MAX_STORAGE_DEPTH;
use sessiond_core::storage::{MAX_PATH_DEPTH, check_limits, increment, merge_patch};
use sessiond_core::{Error, SessionPolicy, SessionRecord, Timestamp};
use sessiond_fuzz::assert_json_round_trips;

/// RFC 7396, written from the RFC's pseudo-code.
fn reference_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            reference_merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn check_patch(storage: &mut Map<String, Value>, patch: &Value) {
    let before = storage.clone();
    match merge_patch(storage, patch) {
        Err(e) => {
            assert!(!patch.is_object(), "an object patch was refused: {e}");
            assert_eq!(*storage, before, "a refused patch changed the storage");
        }
        Ok(()) => {
            assert!(patch.is_object());
            let mut expected = Value::Object(before);
            reference_merge(&mut expected, patch);
            assert_eq!(
                Value::Object(storage.clone()),
                expected,
                "differs from RFC 7396"
            );
            let once = storage.clone();
            merge_patch(storage, patch).unwrap();
            assert_eq!(*storage, once, "merge_patch is not idempotent");
        }
    }
}

fn at<'a>(storage: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segs = path.split('.');
    let mut cur = storage.get(segs.next()?)?;
    for s in segs {
        cur = cur.as_object()?.get(s)?;
    }
    Some(cur)
}

fn check_increment(storage: &mut Map<String, Value>, path: &str, by: &Value) {
    let before = storage.clone();
    match increment(storage, path, by) {
        Err(_) => assert_eq!(*storage, before, "a refused increment changed the storage"),
        Ok(v) => {
            assert!(by.is_number() && !path.is_empty());
            assert!(path.split('.').count() <= MAX_PATH_DEPTH);
            assert!(v.is_number());
            assert_eq!(at(storage, path), Some(&v), "the result is not at {path:?}");
            let old = at(&before, path).cloned().unwrap_or(Value::from(0));
            if let (Some(a), Some(b)) = (old.as_i64(), by.as_i64()) {
                if let Some(sum) = a.checked_add(b) {
                    assert_eq!(v.as_i64(), Some(sum), "integers stay integers");
                }
            }
            let first = path.split('.').next().unwrap();
            for (k, val) in &before {
                if k != first {
                    assert_eq!(storage.get(k), Some(val), "{k} changed");
                }
            }
            assert!(storage.len() <= before.len() + 1);
        }
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredRef<'a> {
    record: &'a SessionRecord,
    last_activity: Timestamp,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    record: SessionRecord,
    #[allow(dead_code)]
    last_activity: Timestamp,
}

fn check_stored(storage: &Map<String, Value>) {
    let storage_value = Value::Object(storage.clone());
    assert_json_round_trips(&storage_value);
    let mut record = SessionRecord::new_web(
        Timestamp(1_700_000_000_000),
        &SessionPolicy::default(),
        None,
    );
    record.storage = Arc::new(storage.clone());
    // Redis keeps the record itself.
    let bytes = serde_json::to_vec(&record).expect("a record serializes");
    let back: SessionRecord = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("a session record with this storage cannot be read back (Redis form): {e}")
    });
    assert_eq!(*back.storage, *storage);
    // The embedded store keeps {record, lastActivity}.
    let bytes = serde_json::to_vec(&StoredRef {
        record: &record,
        last_activity: Timestamp(1_700_000_000_000),
    })
    .unwrap();
    let back: Stored = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("a session record with this storage cannot be read back (embedded form): {e}")
    });
    assert_eq!(*back.record.storage, *storage);
}

/// Nesting depth of objects and arrays, the storage object being level 1.
fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `check_limits`, checked against an independent computation; whether the storage
/// may be stored.
fn within_limits(storage: &Map<String, Value>, policy: &SessionPolicy) -> bool {
    let d = depth(&Value::Object(storage.clone()));
    let size = serde_json::to_string(storage).unwrap().len();
    let got = check_limits(storage, policy);
    if d > policy.max_storage_depth {
        assert_eq!(
            got,
            Err(Error::StorageTooDeep {
                limit: policy.max_storage_depth
            })
        );
    } else if size > policy.max_storage_bytes {
        assert_eq!(
            got,
            Err(Error::StorageTooLarge {
                size,
                limit: policy.max_storage_bytes
            })
        );
    } else {
        assert_eq!(got, Ok(()));
    }
    got.is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&limits, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let policy = SessionPolicy {
        max_storage_depth: 1 + usize::from(limits) % MAX_STORAGE_DEPTH,
        max_storage_bytes: if limits & 0x80 == 0x80 { 512 } else { 1 << 20 },
        ..SessionPolicy::default()
    };
    let mut lines = text.split('\n');
    let mut storage = match serde_json::from_str::<Value>(lines.next().unwrap_or("")) {
        Ok(Value::Object(m)) if within_limits(&m, &policy) => m,
        _ => Map::new(),
    };
    for line in lines.take(16) {
        let before = storage.clone();
        if let Some(patch) = line.strip_prefix('p') {
            if let Ok(patch) = serde_json::from_str::<Value>(patch) {
                check_patch(&mut storage, &patch);
            }
        } else if let Some(inc) = line.strip_prefix('i') {
            let (path, by) = inc.split_once('\t').unwrap_or((inc, "1"));
            let by = serde_json::from_str::<Value>(by).unwrap_or_else(|_| Value::from(by));
            check_increment(&mut storage, path, &by);
        }
        // As `Sessions::update`: a storage over the limits is not stored.
        if storage != before && !within_limits(&storage, &policy) {
            storage = before;
        }
    }
    check_stored(&storage);
});
