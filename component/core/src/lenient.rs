//! Field-level deserializers that never fail on a wrong JSON type.
//!
//! The relay contract says a wrong-typed field degrades to its default while
//! the frame is kept (spec §4.1/§4.2); only a few structural faults skip a
//! line. These helpers implement "degrade": each accepts any JSON value and
//! maps the shapes it does not want to the default, consuming them fully.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

struct OptStringVisitor {
    /// Whether integers are rendered as decimal strings (id-like fields).
    integers: bool,
}

impl<'de> Visitor<'de> for OptStringVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.integers.then(|| v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.integers.then(|| v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// A string, or `None` for any other JSON type.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(OptStringVisitor { integers: false })
}

/// A string, an integer rendered in decimal (ids), or `None` otherwise.
pub(crate) fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(OptStringVisitor { integers: true })
}

/// A string, or `""` for any other JSON type.
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_string(d)?.unwrap_or_default())
}

/// A string or an integer in decimal, or `""` otherwise.
pub(crate) fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_id(d)?.unwrap_or_default())
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// A JSON boolean, `false` for anything else.
pub(crate) fn bool_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)
}

/// A JSON boolean, `None` for anything else (tri-state fields).
pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<bool>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<bool>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<bool>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// An array's string elements in order (other elements dropped), `[]` for a
/// non-array.
pub(crate) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<OptStringElem>()? {
                if let Some(s) = item.0 {
                    out.push(s);
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

struct OptStringElem(Option<String>);

impl<'de> Deserialize<'de> for OptStringElem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OptStringElem(opt_string(d)?))
    }
}

/// A nested JSON value that must be an object to be used.
///
/// `Absent` covers a missing key and `null`; `NotObject` records a present
/// value of another type so the caller can decide between "skip the line"
/// (the structural fields of §1.5) and "degrade to the default".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Nested<T> {
    #[default]
    Absent,
    Object(T),
    NotObject,
}

impl<T> Nested<T> {
    /// The object, or `None` when absent or of the wrong type.
    pub(crate) fn into_option(self) -> Option<T> {
        match self {
            Nested::Object(t) => Some(t),
            _ => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Nested<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Nested<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Nested::Object)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Nested<T>, E> {
                Ok(Nested::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Nested<T>, E> {
                Ok(Nested::Absent)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Nested<T>, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nested<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Nested::NotObject)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An array whose object elements are decoded as `T`; other elements and a
/// non-array value are dropped.
pub(crate) fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<Nested<T>>()? {
                if let Nested::Object(t) = item {
                    out.push(t);
                }
            }
            Ok(out)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// Python truthiness of a JSON value, as the reference adapter applies it to
/// metadata and result fields.
pub fn is_truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Probe {
        #[serde(deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(deserialize_with = "id")]
        i: String,
        #[serde(deserialize_with = "bool_false")]
        b: bool,
        #[serde(deserialize_with = "strings")]
        v: Vec<String>,
        n: Nested<Inner>,
    }

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(default)]
    struct Inner {
        #[serde(deserialize_with = "string")]
        x: String,
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).expect("probe parses")
    }

    #[test]
    fn wrong_types_degrade_to_defaults() {
        let p = probe(r#"{"s": 5, "i": [1], "b": "yes", "v": {"a": 1}, "n": null}"#);
        assert_eq!(p.s, None);
        assert_eq!(p.i, "");
        assert!(!p.b);
        assert!(p.v.is_empty());
        assert_eq!(p.n, Nested::Absent);
    }

    #[test]
    fn right_types_are_kept() {
        let p = probe(r#"{"s": "a", "i": 42, "b": true, "v": ["x", 1, "", "y"], "n": {"x": "z"}}"#);
        assert_eq!(p.s.as_deref(), Some("a"));
        assert_eq!(p.i, "42");
        assert!(p.b);
        assert_eq!(p.v, vec!["x", "", "y"]);
        assert_eq!(p.n, Nested::Object(Inner { x: "z".into() }));
    }

    #[test]
    fn nested_non_object_is_reported() {
        assert_eq!(probe(r#"{"n": [1, {"x": "a"}]}"#).n, Nested::NotObject);
        assert_eq!(probe(r#"{"n": "str"}"#).n, Nested::NotObject);
        assert_eq!(probe(r#"{}"#).n, Nested::Absent);
    }

    #[test]
    fn deep_wrong_typed_values_are_consumed() {
        let p = probe(r#"{"s": {"a": [1, {"b": [[[]]]}]}, "i": "ok"}"#);
        assert_eq!(p.s, None);
        assert_eq!(p.i, "ok");
    }

    #[test]
    fn truthiness_follows_python() {
        use serde_json::json;
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!is_truthy(&v), "{v} should be falsy");
        }
        for v in [
            json!(true),
            json!(1),
            json!("x"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(is_truthy(&v), "{v} should be truthy");
        }
    }
}
