//! Enums whose names are spelled once: an enum's `ALL` and `as_str` are the
//! only list of its names, and [`spelled!`] derives the rest from them —
//! `parse`, serde (the enum is written and read as its name) and, given a
//! schema name, the OpenAPI schema (a string enum).

/// For an enum with `ALL` and `as_str`, implements `parse`, `From<T> for
/// &'static str` and `TryFrom<String>` (for `#[serde(into = "&'static
/// str", try_from = "String")]`) and, with a name and a description,
/// utoipa's `ToSchema`.
macro_rules! spelled {
    ($t:ident $(, $schema:literal, $doc:literal)?) => {
        impl $t {
            /// The variant spelled `s`.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == s)
            }
        }

        impl From<$t> for &'static str {
            fn from(v: $t) -> Self {
                v.as_str()
            }
        }

        impl TryFrom<String> for $t {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("unknown {} `{s}`", stringify!($t)))
            }
        }

        $(
            impl utoipa::PartialSchema for $t {
                fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .description(Some($doc))
                        .enum_values(Some(Self::ALL.map(Self::as_str)))
                        .into()
                }
            }

            impl utoipa::ToSchema for $t {
                fn name() -> std::borrow::Cow<'static, str> {
                    $schema.into()
                }
            }
        )?
    };
}

pub(crate) use spelled;
