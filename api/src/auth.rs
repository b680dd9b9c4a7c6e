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
    /// Not valid before, seconds since the Unix epoch (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
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

/// The shortest HS256 secret accepted: as many bytes as the hash (RFC 7518, 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// How far clocks may disagree on `exp` and `nbf` unless told.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = DEFAULT_LEEWAY_SECS;
    validation
}

impl Verifier {
    /// Checks HS256 tokens signed with `secret`, which must be at least
    /// [`MIN_SECRET_BYTES`] long.
    pub fn hs256(secret: &[u8]) -> anyhow::Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "the JWT secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                secret.len()
            );
        }
        Ok(Verifier {
            key: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256),
        })
    }

    pub fn rs256(public_key_pem: &[u8]) -> anyhow::Result<Self> {
        Ok(Verifier {
            key: DecodingKey::from_rsa_pem(public_key_pem)?,
            validation: validation(Algorithm::RS256),
        })
    }

    /// How far clocks may disagree on `exp` and `nbf` (default [`DEFAULT_LEEWAY_SECS`]).
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// The caller of an `Authorization` header value, or why not (for a 401).
    pub fn caller(&self, header: Option<&str>) -> Result<Caller, String> {
        let header = header.ok_or("missing bearer token (Authorization: Bearer <token>)")?;
        // The scheme is case-insensitive (RFC 7235, 2.1).
        let token = header
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or("the Authorization header must be \"Bearer <token>\"")?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {}", why(e.kind())))?;
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

/// Why a token was refused, in our words rather than the library's.
fn why(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "it has expired".into(),
        K::ImmatureSignature => "it is not valid yet (nbf)".into(),
        K::InvalidSignature => "its signature does not verify".into(),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            "it is not signed with the algorithm this service expects".into()
        }
        K::MissingRequiredClaim(claim) => format!("it has no {claim:?} claim"),
        K::InvalidClaimFormat(claim) => format!("its {claim:?} claim has the wrong type"),
        _ => "it is not a well-formed JWT with sub, tenant, roles and exp".into(),
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
        nbf: None,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// The HS256 secret: `XT_JWT_SECRET`, else the contents of `file`.
pub fn secret(file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    let secret = match std::env::var("XT_JWT_SECRET") {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => read_secret(file)?,
    };
    if secret.len() < MIN_SECRET_BYTES {
        anyhow::bail!(
            "the JWT secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} (head -c 32 /dev/urandom | base64)",
            secret.len()
        );
    }
    Ok(secret)
}

fn read_secret(file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    let file = file.ok_or_else(|| {
        anyhow::anyhow!("no JWT secret: set XT_JWT_SECRET or pass --jwt-secret-file")
    })?;
    let bytes = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("--jwt-secret-file {}: {e}", file.display()))?;
    Ok(bytes.trim_ascii().to_vec())
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
            nbf: None,
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

    const KEY: &[u8] = b"0123456789abcdef-0123456789abcdef";

    fn signed(claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(KEY),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused_in_our_words() {
        let v = Verifier::hs256(KEY).unwrap();
        let t = mint(KEY, "ann", "desk1", &[Role::Researcher], 60).unwrap();
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
        // The scheme is case-insensitive.
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            assert!(v.caller(Some(&format!("{scheme} {t}"))).is_ok(), "{scheme}");
        }
        let other = mint(
            b"another-secret-of-32-bytes-or-more!",
            "ann",
            "desk1",
            &[Role::Admin],
            60,
        )
        .unwrap();
        let refused = |token: &str| v.caller(Some(&format!("Bearer {token}"))).unwrap_err();
        assert_eq!(
            refused(&other),
            "invalid token: its signature does not verify"
        );
        assert_eq!(
            refused("not.a.jwt"),
            "invalid token: it is not a well-formed JWT with sub, tenant, roles and exp"
        );
        assert!(v.caller(Some(&t)).is_err(), "no Bearer scheme");
        assert!(
            v.caller(Some(&format!("Basic {t}"))).is_err(),
            "another scheme"
        );
        assert!(v.caller(None).is_err());
        let claims = |exp: u64, nbf: Option<u64>, roles: &[&str]| Claims {
            sub: "ann".into(),
            tenant: "desk1".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            exp,
            nbf,
        };
        // Expiry and not-before, within the leeway (5 s by default) and beyond it.
        let (now, admin) = (now(), &["admin"][..]);
        assert_eq!(
            refused(&signed(&claims(now - 30, None, admin))),
            "invalid token: it has expired"
        );
        assert!(
            v.caller(Some(&format!(
                "Bearer {}",
                signed(&claims(now - 2, None, admin))
            )))
            .is_ok()
        );
        assert_eq!(
            refused(&signed(&claims(now + 600, Some(now + 60), admin))),
            "invalid token: it is not valid yet (nbf)"
        );
        assert!(
            v.caller(Some(&format!(
                "Bearer {}",
                signed(&claims(now + 600, Some(now + 2), admin))
            )))
            .is_ok()
        );
        // A wider leeway, as an operator may set it.
        let lenient = Verifier::hs256(KEY).unwrap().with_leeway(120);
        assert!(
            lenient
                .caller(Some(&format!(
                    "Bearer {}",
                    signed(&claims(now - 30, None, admin))
                )))
                .is_ok()
        );
        let unknown_role = signed(&claims(now + 600, None, &["root"]));
        assert!(refused(&unknown_role).contains("no known role"));
    }

    #[test]
    fn a_short_hs256_secret_is_refused_at_start() {
        let e = Verifier::hs256(b"0123456789abcdef").err().unwrap();
        assert!(e.to_string().contains("at least 32"), "{e}");
        assert!(Verifier::hs256(KEY).is_ok());
    }
}
