//! JSON objects only, wherever protocol v1 says "object".
//!
//! serde's derived `Deserialize` for a struct also accepts the struct
//! written as an array of its field values in declaration order, and
//! serde_json offers that form whenever it meets `[`: `[1, {...}, "<mac>"]`
//! would pass as an envelope and `"system":[86400,[0,0,0],"6.1"]` as system
//! facts. `#[serde(deny_unknown_fields)]` does not change that. The protocol
//! has exactly one form per message, so a second, undocumented one is a
//! difference between implementations waiting to be exploited.
//!
//! Each protocol struct therefore derives with `#[serde(remote = "Self")]`,
//! which turns the derived code into an inherent `Type::deserialize`, and
//! gets its `Deserialize` impl from [`object_only!`]: that asks the format
//! for a map (serde_json refuses anything but `{`) and only then runs the
//! derived code on the map's entries. Because the check lives in the type's
//! own impl, it holds wherever the type appears: at the top, nested, in a
//! `Vec`. Never call the inherent `Type::deserialize` directly; go through
//! the trait (`serde_json::from_str` and friends do).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};

/// A struct whose derived field-by-field code can run on a map's entries.
/// Implemented by [`object_only!`]; not meant to be implemented by hand.
pub trait FromFields<'de>: Sized {
    /// What the field holds, for "expected …" messages.
    const EXPECTING: &'static str;

    fn from_fields<A: MapAccess<'de>>(fields: MapAccessDeserializer<A>) -> Result<Self, A::Error>;
}

/// Deserialises `T` from a map and nothing else.
pub fn deserialize_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromFields<'de>,
{
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: FromFields<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object ({})", T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_fields(MapAccessDeserializer::new(map))
    }
}

/// Gives each listed type (derived with `#[serde(remote = "Self")]`) a
/// `Deserialize` that accepts only a JSON object and, when the type also
/// derives `Serialize` that way, a `Serialize` forwarding to the derived
/// one: `"what it is" => Type;`, `"…" => Type<'a>;` or `"…" => Type, serialize;`.
#[macro_export]
macro_rules! object_only {
    ($($what:literal => $ty:ident $(<$lt:lifetime>)? $(, $ser:ident)?;)+) => {$(
        $crate::object_only!(@deserialize $what $ty $(<$lt>)?);
        $($crate::object_only!(@$ser $ty);)?
    )+};
    (@deserialize $what:literal $ty:ident $(<$lt:lifetime>)?) => {
        impl<'de $(: $lt, $lt)?> $crate::object::FromFields<'de> for $ty $(<$lt>)? {
            const EXPECTING: &'static str = $what;

            fn from_fields<A: ::serde::de::MapAccess<'de>>(
                fields: ::serde::de::value::MapAccessDeserializer<A>,
            ) -> ::std::result::Result<Self, A::Error> {
                // The inherent function: the derived field-by-field code.
                $ty::deserialize(fields)
            }
        }

        impl<'de $(: $lt, $lt)?> ::serde::Deserialize<'de> for $ty $(<$lt>)? {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::object::deserialize_object(deserializer)
            }
        }
    };
    (@serialize $ty:ident) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                // The inherent function: the derived code, unchanged.
                $ty::serialize(self, serializer)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    struct Point {
        x: i64,
        y: i64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(remote = "Self")]
    struct Shape<'a> {
        name: &'a str,
        corners: Vec<Point>,
    }

    crate::object_only! {
        "a point" => Point, serialize;
        "a shape" => Shape<'a>;
    }

    #[test]
    fn derived_structs_accept_arrays_without_the_wrapper() {
        // The hole this module closes, shown on a plain derive.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Plain {
            x: i64,
        }
        assert!(serde_json::from_str::<Plain>("[1]").is_ok());
    }

    #[test]
    fn objects_pass_arrays_do_not_at_any_depth() {
        let shape: Shape<'_> =
            serde_json::from_str(r#"{"name":"tri","corners":[{"x":1,"y":2}]}"#).unwrap();
        assert_eq!(shape.corners, [Point { x: 1, y: 2 }]);
        for bad in [r#"["tri",[]]"#, r#"{"name":"tri","corners":[[1,2]]}"#] {
            let err = serde_json::from_str::<Shape<'_>>(bad).unwrap_err();
            assert!(err.is_data(), "{bad}: {err}");
            assert!(err.to_string().contains("expected a JSON object"), "{bad}: {err}");
        }
    }

    #[test]
    fn derived_rules_still_apply_and_serialising_is_unchanged() {
        let dup = serde_json::from_str::<Point>(r#"{"x":1,"x":2,"y":3}"#).unwrap_err();
        assert!(dup.to_string().contains("duplicate field"), "{dup}");
        assert!(serde_json::from_str::<Point>(r#"{"x":1}"#).is_err());
        assert_eq!(serde_json::to_string(&Point { x: 1, y: 2 }).unwrap(), r#"{"x":1,"y":2}"#);
    }
}
