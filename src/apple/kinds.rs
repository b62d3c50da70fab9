//! How the one list of kinds (in `apple/mod.rs`) becomes types: [`Kind`], and the
//! kind-specific parts of requests, [`JwtParams`](super::JwtParams) and
//! [`SignatureParams`](super::SignatureParams).

use serde::Serialize;

use super::Kind;
use crate::ids::printable;
use crate::Error;

/// Generates, from the one list of kinds in `apple/mod.rs`: [`Kind`], and the
/// kind-specific parts of requests, [`JwtParams`] and [`SignatureParams`].
macro_rules! kinds {
    (
        tokens { $( $(#[$tdoc:meta])* $tv:ident($tt:ty) = $tspec:path, )* }
        signatures { $( $(#[$sdoc:meta])* $sv:ident($st:ty) = $sspec:path, )* }
    ) => {
        /// Every kind of request, as `p8hsm token KIND` / `p8hsm sign KIND` and the
        /// agent's protocol (`"kind"`) name it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $( $(#[$tdoc])* $tv, )*
            $( $(#[$sdoc])* $sv, )*
        }

        impl Kind {
            /// Every kind, tokens first, in the order the command line lists them.
            pub const ALL: &'static [Kind] = &[$(Kind::$tv,)* $(Kind::$sv,)*];

            /// What the kind states about itself.
            pub fn spec(self) -> &'static $crate::apple::spec::Spec {
                match self {
                    $( Kind::$tv => &$tspec, )*
                    $( Kind::$sv => &$sspec, )*
                }
            }
        }

        /// The kind-specific part of a JWT request.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum JwtParams {
            $( $(#[$tdoc])* $tv($tt), )*
        }

        impl JwtParams {
            /// Its kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $( JwtParams::$tv(_) => Kind::$tv, )*
                }
            }

            pub(crate) fn rules(&self) -> &dyn $crate::apple::spec::JwtKind {
                match self {
                    $( JwtParams::$tv(p) => p, )*
                }
            }

            pub(crate) fn to_fields(
                &self,
            ) -> Result<serde_json::Map<String, serde_json::Value>, $crate::Error> {
                match self {
                    $( JwtParams::$tv(p) => $crate::apple::request::to_fields(p), )*
                }
            }

            pub(crate) fn from_fields(
                kind: Kind,
                fields: serde_json::Map<String, serde_json::Value>,
            ) -> Option<Result<Self, $crate::Error>> {
                match kind {
                    $( Kind::$tv => Some(
                        $crate::apple::request::from_fields(fields).map(JwtParams::$tv)
                    ), )*
                    _ => None,
                }
            }
        }

        /// The kind-specific part of a signature request. Not `Hash`: signatures carry
        /// one-time nonces and are never cached.
        #[derive(Debug, Clone)]
        pub enum SignatureParams {
            $( $(#[$sdoc])* $sv($st), )*
        }

        impl SignatureParams {
            /// Its kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $( SignatureParams::$sv(_) => Kind::$sv, )*
                }
            }

            pub(crate) fn rules(&self) -> &dyn $crate::apple::spec::SignatureKind {
                match self {
                    $( SignatureParams::$sv(p) => p, )*
                }
            }

            pub(crate) fn to_fields(
                &self,
            ) -> Result<serde_json::Map<String, serde_json::Value>, $crate::Error> {
                match self {
                    $( SignatureParams::$sv(p) => $crate::apple::request::to_fields(p), )*
                }
            }

            pub(crate) fn from_fields(
                kind: Kind,
                fields: serde_json::Map<String, serde_json::Value>,
            ) -> Option<Result<Self, $crate::Error>> {
                match kind {
                    $( Kind::$sv => Some(
                        $crate::apple::request::from_fields(fields).map(SignatureParams::$sv)
                    ), )*
                    _ => None,
                }
            }
        }
    };
}

impl Kind {
    /// The kind named `name`, as the command line and the protocol name it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.spec().name == name)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Kind::from_name(s).ok_or_else(|| Error::InvalidId {
            what: "kind",
            value: printable(s),
            rule: "not a kind p8hsm knows",
        })
    }
}
