//! IC tokens: minted with the active signing key, never stored (only id and metadata),
//! revoked into the revocation set with a `token_revoked` event.

use std::time::Duration;

use iron_core::Money;
use iron_core::wire::ControlEvent;
use serde_json::json;
use zeroize::Zeroizing;

use super::{Actor, Service};
use crate::error::ApiError;
use crate::model::{Budget, Period, Project, TokenRecord, new_id, now};

/// Default token lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A validated mint request.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub name: Option<String>,
    pub budget: Option<Money>,
    pub period: Option<Period>,
    pub ttl: Duration,
    /// The token's own RPM/TPM limits (validated), also minted into the token.
    pub rate_limits: iron_core::ratelimit::RateLimits,
}

impl Service {
    pub async fn get_token(&self, id: &str) -> Result<TokenRecord, ApiError> {
        self.store
            .get_token(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("token `{}` not found", super::shown(id))))
    }

    /// Mints a token for `project`. Returns the record and the token (shown once).
    pub async fn mint_token(
        &self,
        actor: &Actor,
        project: &Project,
        req: MintRequest,
    ) -> Result<(TokenRecord, Zeroizing<String>), ApiError> {
        let key = self.active_signing_key().await?;
        let iat = now();
        let exp = iat.saturating_add(req.ttl.as_secs());
        let record = TokenRecord {
            id: new_id("tok"),
            project_id: project.id.clone(),
            name: req.name,
            budget: Budget {
                limit: req.budget,
                period: req.period.unwrap_or_default(),
            },
            kid: key.kid().to_owned(),
            created_at: iat,
            expires_at: exp,
            revoked_at: None,
            rate_limits: req.rate_limits,
        };
        let token = Zeroizing::new(
            key.mint_with_limits(&record.id, &project.id, iat, exp, req.rate_limits)
                .map_err(|e| ApiError::Internal(format!("mint: {e}")))?,
        );
        self.store.create_token(&record).await?;
        self.audit_change(
            actor,
            "token.mint",
            &record.id,
            Some(&project.id),
            json!({"name": record.name, "expires_at": exp, "budget_usd": super::projects::usd(record.budget.limit), "kid": record.kid, "rpm": record.rate_limits.rpm, "tpm": record.rate_limits.tpm}),
            serde_json::Value::Null,
            super::audit_image(&record),
        )
        .await?;
        Ok((record, token))
    }

    /// Revokes a token (idempotent). Emits `token_revoked` the first time.
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        token: &TokenRecord,
    ) -> Result<TokenRecord, ApiError> {
        let r = self.store.revoke_token(&token.id, now()).await?;
        if r.newly_revoked {
            self.emit(ControlEvent::TokenRevoked {
                token_id: token.id.clone(),
            })
            .await?;
            self.audit_change(
                actor,
                "token.revoke",
                &token.id,
                Some(&token.project_id),
                json!({"name": token.name}),
                super::audit_image(token),
                super::audit_image(&r.token),
            )
            .await?;
        }
        Ok(r.token)
    }
}
