//! JSON through the browser's own `JSON.parse` and `JSON.stringify`. The widget reads a handful of
//! fields (a chunk's text, an error's code, the site's config) and writes two small shapes; doing
//! that with serde_json cost about 50 KB of the module (its parser, and the float formatting its
//! error messages pull in), for work the browser already does natively.

use js_sys::{Array, JSON, Object, Reflect};
use wasm_bindgen::JsValue;

/// The parsed value, or `None` for anything that is not JSON.
pub fn parse(text: &str) -> Option<JsValue> {
    JSON::parse(text).ok()
}

/// `value[key]`, `undefined` when `value` is not an object or has no such field.
pub fn get(value: &JsValue, key: &str) -> JsValue {
    if value.is_object() {
        Reflect::get(value, &key.into()).unwrap_or_default()
    } else {
        JsValue::UNDEFINED
    }
}

/// `value[key]` when it is a string.
pub fn string(value: &JsValue, key: &str) -> Option<String> {
    get(value, key).as_string()
}

/// `value[key]` when it is an array: its items.
pub fn items(value: &JsValue, key: &str) -> Vec<JsValue> {
    let list = get(value, key);
    if Array::is_array(&list) { Array::from(&list).to_vec() } else { Vec::new() }
}

/// A JSON object text with these fields.
pub fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in fields {
        let _ = Reflect::set(&object, &(*key).into(), value);
    }
    object.into()
}

/// The JSON text of `value`.
pub fn stringify(value: &JsValue) -> String {
    JSON::stringify(value).ok().and_then(|s| s.as_string()).unwrap_or_default()
}
