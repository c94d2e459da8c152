//! The routing table every request reads: verifier, projects, deployments, revocations.
//!
//! Built from the static config or from control's snapshot, then published through an
//! `ArcSwap` so the request path reads it lock-free and a refresh (new keys, a revoked token,
//! a new provider) swaps it atomically. Verified tokens are cached per table so the Ed25519
//! check runs once per token, not once per request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use http::HeaderValue;
use iron_core::token::{IcClaims, PublicKey, TokenError, TokenVerifier};
use iron_core::wire::{ApiFamily, ProviderKind, glob_match};
use zeroize::Zeroizing;

use crate::client::Endpoint;
use crate::config::{ProjectConfig, ProviderConfig, StaticSource};

/// Bound on cached verified tokens per routing table.
const TOKEN_CACHE_MAX: usize = 100_000;

/// A provider deployment with its decrypted key.
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub endpoint: Endpoint,
    pub models: Vec<String>,
    pub priority: i32,
    /// The credential header value (`Bearer sk-…` or the raw Anthropic key), marked sensitive.
    pub credential: HeaderValue,
    /// The raw key, kept to scrub it from upstream error bodies.
    pub api_key: Zeroizing<String>,
    /// This deployment's own timeouts (static `[[providers]]`); unset ones use `[upstream]`.
    pub timeouts: crate::config::TimeoutOverrides,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    pub fn family(&self) -> ApiFamily {
        self.kind.family()
    }

    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|p| glob_match(p, model))
    }

    /// The timeouts of an exchange with this deployment (`[upstream]` unless overridden).
    pub fn timeouts(&self, defaults: crate::client::Timeouts) -> crate::client::Timeouts {
        self.timeouts.apply(defaults)
    }

    pub fn new(
        id: String,
        name: String,
        kind: ProviderKind,
        base_url: &str,
        models: Vec<String>,
        priority: i32,
        api_key: Zeroizing<String>,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::parse(base_url)?;
        let raw = match kind.family() {
            ApiFamily::OpenAi => Zeroizing::new(format!("Bearer {}", api_key.as_str())),
            ApiFamily::Anthropic => Zeroizing::new(api_key.as_str().to_owned()),
        };
        let mut credential = HeaderValue::from_str(&raw).map_err(|_| {
            format!("provider {id}: the API key contains characters not allowed in a header")
        })?;
        credential.set_sensitive(true);
        Ok(Deployment {
            id,
            name,
            kind,
            endpoint,
            models,
            priority,
            credential,
            api_key,
            timeouts: Default::default(),
        })
    }
}

/// A project as routing needs it.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub providers: Vec<String>,
    pub allowed_models: Vec<String>,
    pub pii: Arc<iron_core::pii::PiiPolicy>,
    /// RPM/TPM limits of the project (the ratelimit stage).
    pub rate_limits: iron_core::ratelimit::RateLimits,
}

impl Project {
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|p| glob_match(p, model))
    }

    pub fn may_use(&self, deployment: &Deployment) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p == &deployment.id)
    }
}

impl From<&ProjectConfig> for Project {
    fn from(p: &ProjectConfig) -> Self {
        Project {
            id: p.id.clone(),
            name: p.name.clone(),
            providers: p.providers.clone(),
            allowed_models: p.allowed_models.clone(),
            pii: Arc::new(p.pii.clone()),
            rate_limits: p.rate_limits,
        }
    }
}

/// Why a token was not accepted by the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Token(TokenError),
    Revoked,
    UnknownProject,
}

/// One immutable routing table.
pub struct Routing {
    pub version: u64,
    verifier: TokenVerifier,
    pub projects: HashMap<String, Arc<Project>>,
    /// Sorted by priority, highest first.
    pub deployments: Vec<Arc<Deployment>>,
    revoked: HashSet<String>,
    verified: RwLock<HashMap<Box<str>, Arc<IcClaims>>>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("version", &self.version)
            .field("projects", &self.projects.len())
            .field("deployments", &self.deployments)
            .finish_non_exhaustive()
    }
}

impl Routing {
    pub fn new(
        version: u64,
        keys: &[PublicKey],
        projects: Vec<Project>,
        mut deployments: Vec<Deployment>,
        revoked: HashSet<String>,
    ) -> Result<Self, TokenError> {
        deployments.sort_by_key(|d| std::cmp::Reverse(d.priority));
        Ok(Routing {
            version,
            verifier: TokenVerifier::new(keys)?,
            projects: projects
                .into_iter()
                .map(|p| (p.id.clone(), Arc::new(p)))
                .collect(),
            deployments: deployments.into_iter().map(Arc::new).collect(),
            revoked,
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// A table that knows no keys, projects or providers (control mode before the first
    /// snapshot).
    pub fn empty() -> Self {
        Routing {
            version: 0,
            verifier: TokenVerifier::empty(),
            projects: HashMap::new(),
            deployments: Vec::new(),
            revoked: HashSet::new(),
            verified: RwLock::new(HashMap::new()),
        }
    }

    pub fn from_static(s: &StaticSource) -> Result<Self, String> {
        let deployments = s
            .providers
            .iter()
            .map(|p: &ProviderConfig| {
                Deployment::new(
                    p.id.clone(),
                    p.name.clone(),
                    p.kind,
                    &p.base_url,
                    p.models.clone(),
                    p.priority,
                    p.api_key.clone(),
                )
                .map(|d| Deployment {
                    timeouts: p.timeouts,
                    ..d
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Routing::new(
            0,
            &s.public_keys,
            s.projects.iter().map(Project::from).collect(),
            deployments,
            HashSet::new(),
        )
        .map_err(|e| e.to_string())
    }

    /// A copy of this table with `token_id` revoked (verified-token cache kept).
    pub fn with_revoked(&self, token_id: &str) -> Option<Routing> {
        if self.revoked.contains(token_id) {
            return None;
        }
        let mut revoked = self.revoked.clone();
        revoked.insert(token_id.to_owned());
        let verified = self.verified.read().map(|m| m.clone()).unwrap_or_default();
        Some(Routing {
            version: self.version,
            verifier: self.verifier.clone(),
            projects: self.projects.clone(),
            deployments: self.deployments.clone(),
            revoked,
            verified: RwLock::new(verified),
        })
    }

    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.revoked.contains(token_id)
    }

    /// Verifies `token` (cached), then checks revocation, expiry and the project.
    pub fn authenticate(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Arc<IcClaims>, Arc<Project>), AuthFailure> {
        let cached = self
            .verified
            .read()
            .ok()
            .and_then(|m| m.get(token).cloned());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.verifier.verify(token).map_err(AuthFailure::Token)?);
                if let Ok(mut m) = self.verified.write() {
                    if m.len() >= TOKEN_CACHE_MAX {
                        m.clear();
                    }
                    m.insert(token.into(), c.clone());
                }
                c
            }
        };
        if claims.exp <= now {
            return Err(AuthFailure::Token(TokenError::Expired));
        }
        if self.revoked.contains(&claims.sub) {
            return Err(AuthFailure::Revoked);
        }
        let project = self
            .projects
            .get(&claims.prj)
            .cloned()
            .ok_or(AuthFailure::UnknownProject)?;
        Ok((claims, project))
    }
}
