//! Helpers shared by the fuzz targets in `fuzz_targets/` (see `fuzz/README.md`).

use std::sync::LazyLock;

use serde_json::Value;

/// Splits `data` on `\n` into exactly `n` parts (the last one keeps any further
/// newlines; missing parts are empty).
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == b'\n').collect();
    out.resize(n, &[]);
    out
}

/// [`split`], as text (`None` when a part is not UTF-8).
pub fn split_str(data: &[u8], n: usize) -> Option<Vec<&str>> {
    split(data, n)
        .into_iter()
        .map(|p| std::str::from_utf8(p).ok())
        .collect()
}

/// Serializes `v` and reads it back: the text must be JSON again and mean exactly
/// the same value (the workspace enables serde_json's `float_roundtrip`).
pub fn assert_json_round_trips(v: &Value) {
    let text = serde_json::to_string(v).expect("a JSON value serializes");
    let back: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("serialized JSON does not parse back: {e}"));
    assert_eq!(*v, back, "JSON changed across a round trip");
}

/// One current-thread Tokio runtime per fuzz process (targets run single-threaded).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime")
    });
    &RT
}

/// Runs a future to completion on [`runtime`].
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Replaces the first `placeholder` in `text` with `secret`; whether it did.
pub fn substitute(text: &str, placeholder: &str, secret: &str) -> (String, bool) {
    if text.contains(placeholder) {
        (text.replacen(placeholder, secret, 1), true)
    } else {
        (text.to_string(), false)
    }
}

/// Applies edits `(position, byte)` taken from `edits` (two bytes each) to `text`;
/// `None` when the result is not UTF-8.
pub fn edit(text: &str, edits: &[u8]) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    for pair in edits.chunks_exact(2) {
        let (pos, b) = (usize::from(pair[0]), pair[1]);
        match pos {
            // Past the end: append, so that lengths can change too.
            p if p >= bytes.len() => bytes.push(b),
            // 0xFF deletes.
            p if b == 0xFF => {
                bytes.remove(p);
            }
            p => bytes[p] = b,
        }
    }
    String::from_utf8(bytes).ok()
}
