//! Bearer tokens: JWTs with `sub`, `tenant`, `roles` and `exp`, signed HS256 with a shared
//! secret (or verified RS256 with a public key). `viewer` reads, `researcher` also submits
//! and cancels its own batches, `admin` does everything in every tenant.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Researcher,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "researcher" => Some(Role::Researcher),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Who is calling, once their token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub tenant: String,
    /// The highest role the token grants.
    pub role: Role,
}

impl Caller {
    /// Whether the caller may see a batch of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.role == Role::Admin || self.tenant == tenant
    }
}

/// Checks tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn rs256(public_key_pem: &[u8]) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Verifier {
            key: DecodingKey::from_rsa_pem(public_key_pem)?,
            validation,
        })
    }

    /// The caller of an `Authorization` header value, or why not (for a 401).
    pub fn caller(&self, header: Option<&str>) -> Result<Caller, String> {
        let header = header.ok_or("missing bearer token (Authorization: Bearer <token>)")?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or("the Authorization header must be \"Bearer <token>\"")?;
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        let c = data.claims;
        if c.tenant.is_empty() {
            return Err("invalid token: the tenant claim is empty".into());
        }
        let role = c
            .roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .max()
            .ok_or("invalid token: no known role (viewer, researcher, admin)")?;
        Ok(Caller {
            sub: c.sub,
            tenant: c.tenant,
            role,
        })
    }
}

/// Mints an HS256 token valid for `ttl_seconds`.
pub fn mint(
    secret: &[u8],
    sub: &str,
    tenant: &str,
    roles: &[Role],
    ttl_seconds: u64,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: sub.to_string(),
        tenant: tenant.to_string(),
        roles: roles
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .collect(),
        exp: now + ttl_seconds,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// The HS256 secret: `XT_JWT_SECRET`, else the contents of `file`.
pub fn secret(file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    if let Ok(s) = std::env::var("XT_JWT_SECRET")
        && !s.is_empty()
    {
        return Ok(s.into_bytes());
    }
    let file = file.ok_or_else(|| {
        anyhow::anyhow!("no JWT secret: set XT_JWT_SECRET or pass --jwt-secret-file")
    })?;
    let bytes = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("--jwt-secret-file {}: {e}", file.display()))?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.len() < 16 {
        anyhow::bail!("the JWT secret must be at least 16 bytes");
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rs256_tokens_verify_with_the_public_key_only() {
        // A key pair made for this test alone.
        let private = include_bytes!("../tests/fixtures/rs256-test-private.pem");
        let public = include_bytes!("../tests/fixtures/rs256-test-public.pem");
        let claims = Claims {
            sub: "ann".into(),
            tenant: "desk1".into(),
            roles: vec!["viewer".into()],
            exp: u64::MAX / 4,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(private).unwrap(),
        )
        .unwrap();
        let v = Verifier::rs256(public).unwrap();
        let c = v.caller(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!((c.tenant.as_str(), c.role), ("desk1", Role::Viewer));
        // An HS256 token, even one signed with the public key's bytes, is refused.
        let hs = mint(public, "ann", "desk1", &[Role::Admin], 60).unwrap();
        assert!(v.caller(Some(&format!("Bearer {hs}"))).is_err());
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let v = Verifier::hs256(b"0123456789abcdef-secret");
        let t = mint(
            b"0123456789abcdef-secret",
            "ann",
            "desk1",
            &[Role::Researcher],
            60,
        )
        .unwrap();
        let c = v.caller(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(
            c,
            Caller {
                sub: "ann".into(),
                tenant: "desk1".into(),
                role: Role::Researcher
            }
        );
        assert!(c.sees("desk1") && !c.sees("desk2"));
        let other = mint(b"another-secret-of-16+", "ann", "desk1", &[Role::Admin], 60).unwrap();
        assert!(
            v.caller(Some(&format!("Bearer {other}"))).is_err(),
            "wrong key"
        );
        assert!(v.caller(Some("Bearer not.a.jwt")).is_err());
        assert!(v.caller(Some(&t)).is_err(), "no Bearer prefix");
        assert!(v.caller(None).is_err());
        // Expired long ago (beyond the default leeway).
        let mut claims = Claims {
            sub: "ann".into(),
            tenant: "desk1".into(),
            roles: vec!["admin".into()],
            exp: 1_000,
        };
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef-secret"),
        )
        .unwrap();
        assert!(
            v.caller(Some(&format!("Bearer {old}")))
                .unwrap_err()
                .contains("Expired")
        );
        claims.exp = u64::MAX / 2;
        claims.roles = vec!["root".into()];
        let unknown_role = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef-secret"),
        )
        .unwrap();
        assert!(v.caller(Some(&format!("Bearer {unknown_role}"))).is_err());
    }
}
