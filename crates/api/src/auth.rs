//! JWT bearer auth: HS256 only, `exp` required, `sub` is the user id (a
//! string per RFC 7519, or a number), `roles: ["admin"]` sees everything.

use agentflow_core::UserId;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// Who is calling, proven by their token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub admin: bool,
}

impl Caller {
    pub fn may_see(&self, owner: UserId) -> bool {
        self.admin || self.user == owner
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(deserialize_with = "sub_as_id", serialize_with = "sub_as_string")]
    pub sub: i64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

fn sub_as_string<S: serde::Serializer>(sub: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&sub.to_string())
}

fn sub_as_id<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sub {
        S(String),
        N(i64),
    }
    match Sub::deserialize(d)? {
        Sub::N(n) => Ok(n),
        Sub::S(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom("sub must be an integer user id")),
    }
}

/// Signs and checks tokens with one HS256 secret.
pub struct Jwt {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Jwt {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        // `sub` is checked by `Claims` itself (a number is accepted too).
        validation.set_required_spec_claims(&["exp"]);
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => "token signature is invalid",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "token must be signed with HS256"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (exp)",
                    ErrorKind::Json(_) => {
                        "token claims are invalid: `sub` must be an integer user id"
                    }
                    _ => "token is malformed",
                };
                ApiError::unauthorized(why)
            })?;
        Ok(Caller {
            user: UserId(data.claims.sub),
            admin: data.claims.roles.iter().any(|r| r == "admin"),
        })
    }

    /// Mints a token (for `agentflow token` and tests).
    pub fn mint(&self, sub: i64, admin: bool, ttl: std::time::Duration) -> String {
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl.as_secs();
        let claims = Claims {
            sub,
            exp,
            roles: if admin { vec!["admin".into()] } else { vec![] },
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        state.jwt.verify(token.trim())
    }
}
