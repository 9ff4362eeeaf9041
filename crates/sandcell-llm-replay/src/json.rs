//! JSON objects whose keys keep the order they are written in.
//!
//! `serde_json::Value` sorts object keys (its `preserve_order` feature would change that
//! for every crate built with this one), while each provider sends its keys in an order
//! of its own, which the generated streams copy. Rendering goes through `Display`, which
//! cannot fail, so no script content can make a frame fail to render.

use serde_json::Value;
use std::fmt::{self, Write};

/// A JSON object, its keys in insertion order. Build it with [`object!`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Object(pub(crate) Vec<(&'static str, Json)>);

/// A JSON value that may hold ordered objects.
#[derive(Debug, Clone)]
pub(crate) enum Json {
    Value(Value),
    Object(Object),
    Array(Vec<Json>),
}

impl Object {
    pub(crate) fn push(&mut self, key: &'static str, value: impl Into<Json>) {
        self.0.push((key, value.into()));
    }
}

/// Scalars and ready-made values become plain JSON values. (Listed one by one: a blanket
/// impl over `Into<Value>` would overlap the impls for lists and options of objects.)
macro_rules! from_value {
    ($($type:ty),*) => {$(
        impl From<$type> for Json {
            fn from(value: $type) -> Self {
                Json::Value(value.into())
            }
        }
    )*};
}
from_value!(
    Value,
    &str,
    String,
    bool,
    i32,
    u64,
    usize,
    f64,
    Option<&str>,
    Option<u64>
);

impl From<Object> for Json {
    fn from(object: Object) -> Self {
        Json::Object(object)
    }
}

impl From<Option<Object>> for Json {
    fn from(object: Option<Object>) -> Self {
        object.map_or(Json::Value(Value::Null), Json::Object)
    }
}

impl From<Vec<Object>> for Json {
    fn from(objects: Vec<Object>) -> Self {
        Json::Array(objects.into_iter().map(Json::Object).collect())
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('{')?;
        for (position, (key, value)) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_char(',')?;
            }
            // A `Value::String` displays as a quoted, escaped JSON string.
            write!(f, "{}:{value}", Value::from(*key))?;
        }
        f.write_char('}')
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Value(value) => write!(f, "{value}"),
            Json::Object(object) => write!(f, "{object}"),
            Json::Array(items) => {
                f.write_char('[')?;
                for (position, item) in items.iter().enumerate() {
                    if position > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
        }
    }
}

/// `object! { "key": value, … }`: an [`Object`] with its keys in this order. A value is
/// anything `serde_json::Value` converts from, an [`Object`], or a list of them.
macro_rules! object {
    ($($key:literal: $value:expr),* $(,)?) => {
        $crate::json::Object(vec![$(($key, $crate::json::Json::from($value))),*])
    };
}
pub(crate) use object;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_strings_are_escaped() {
        let inner = object! {"z": 1, "a": Value::Null};
        let outer = object! {
            "type": "x\"y\n",
            "inner": inner.clone(),
            "list": vec![inner, Object::default()],
            "maybe": None::<Object>,
        };
        let text = outer.to_string();
        assert_eq!(
            text,
            r#"{"type":"x\"y\n","inner":{"z":1,"a":null},"list":[{"z":1,"a":null},{}],"maybe":null}"#
        );
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }
}
