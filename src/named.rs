//! Enums whose values are names: config values (`mode = "shadow"`) and
//! wire names (`popup.shown`). [`named_enum!`] writes each name once and
//! derives from it `ALL`, `as_str`, `from_name`, `Display` and serde (a
//! string either way); [`Named`] lets the config's reader check a raw value
//! against the names before serde sees it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Unexpected, Visitor};

/// An enum whose values are called by the names in [`NAMES`](Named::NAMES).
pub(crate) trait Named: Sized + Copy + 'static {
    /// Every name, in declaration order.
    const NAMES: &'static [&'static str];
    /// The value called `name`.
    fn from_name(name: &str) -> Option<Self>;
}

/// `"a" or "b"`, `"a", "b" or "c"`: the names for a message.
pub(crate) fn alternatives(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// Deserializes a [`Named`] value from its name.
pub(crate) struct NameVisitor<T>(PhantomData<T>);

impl<T> NameVisitor<T> {
    /// The visitor.
    pub(crate) const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Named> Visitor<'_> for NameVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", alternatives(T::NAMES))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_name(v).ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// An enum of unit variants, each with its name:
///
/// ```ignore
/// named_enum! {
///     /// `routes[].mode`.
///     #[derive(Default)]
///     pub enum RouteMode {
///         #[default]
///         Enforce = "enforce",
///         Shadow = "shadow",
///     }
/// }
/// ```
///
/// It derives `Debug, Clone, Copy, PartialEq, Eq, Hash` and adds `ALL`,
/// `as_str`, `from_name`, [`Named`], `Display`, `Serialize` and
/// `Deserialize` (both as the name).
macro_rules! named_enum {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vattr:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vattr])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            /// The name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The value called `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl $crate::named::Named for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];

            fn from_name(name: &str) -> Option<Self> {
                Self::from_name(name)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::named::NameVisitor::<Self>::new())
            }
        }
    };
}

pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::*;

    named_enum! {
        /// Three.
        enum Abc {
            A = "a",
            B = "b-b",
            C = "c.c",
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(Abc::ALL, [Abc::A, Abc::B, Abc::C]);
        assert_eq!(<Abc as Named>::NAMES, ["a", "b-b", "c.c"]);
        for v in Abc::ALL {
            assert_eq!(Abc::from_name(v.as_str()), Some(v));
            assert_eq!(v.to_string(), v.as_str());
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("{:?}", v.as_str()));
            assert_eq!(serde_json::from_str::<Abc>(&json).unwrap(), v);
        }
        assert_eq!(Abc::from_name("B"), None);
    }

    #[test]
    fn an_unknown_name_lists_the_names() {
        let e = serde_json::from_str::<Abc>("\"d\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"expected "a", "b-b" or "c.c""#), "{e}");
        let e = serde_json::from_str::<Abc>("1").unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn alternatives_read_as_a_sentence() {
        assert_eq!(alternatives(&["a"]), r#""a""#);
        assert_eq!(alternatives(&["a", "b"]), r#""a" or "b""#);
        assert_eq!(alternatives(&["a", "b", "c"]), r#""a", "b" or "c""#);
    }
}
