//! Provider deployments: keys sealed at rest under the master key (AAD = provider id),
//! write-only through the API, masked in listings.

use iron_core::wire::{ControlEvent, DeploymentTimeouts, ProviderKind};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Actor, Service, audit_image, shown, walk};
use crate::error::ApiError;
use crate::model::{Provider, new_id, now};
use crate::validate::{Name, ProviderKeyInput, check_upstream_url, mask_key};

/// A validated provider creation request.
#[derive(Debug)]
pub struct NewProvider {
    pub name: Name,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: ProviderKeyInput,
    pub models: Vec<String>,
    pub priority: i32,
    /// Per-deployment timeouts, already validated (`validate::TimeoutMs`).
    pub timeouts: DeploymentTimeouts,
}

/// A validated provider update: `None` leaves a setting unchanged.
#[derive(Debug, Default)]
pub struct ProviderUpdate {
    pub base_url: Option<String>,
    pub models: Option<Vec<String>>,
    pub priority: Option<i32>,
    /// The complete new timeouts (the API merges its partial input onto the current ones).
    pub timeouts: Option<DeploymentTimeouts>,
}

impl Service {
    pub async fn resolve_provider(&self, id_or_name: &str) -> Result<Provider, ApiError> {
        let found = if id_or_name.starts_with("prv_") {
            self.store.get_provider(id_or_name).await?
        } else {
            self.store.provider_by_name(id_or_name).await?
        };
        found.ok_or_else(|| {
            ApiError::not_found(format!("provider `{}` not found", shown(id_or_name)))
        })
    }

    fn checked_url(&self, raw: &str) -> Result<String, ApiError> {
        check_upstream_url(raw, self.allow_private_upstreams)
            .map_err(|m| ApiError::bad_request("invalid_base_url", format!("base_url: {m}")))
    }

    pub async fn create_provider(
        &self,
        actor: &Actor,
        req: NewProvider,
    ) -> Result<Provider, ApiError> {
        let base_url = self.checked_url(&req.base_url)?;
        let id = new_id("prv");
        let t = now();
        let provider = Provider {
            api_key: self.keyring.seal(req.api_key.0.as_bytes(), id.as_bytes()),
            key_hint: mask_key(&req.api_key.0),
            id,
            name: req.name.into_string(),
            kind: req.kind,
            base_url,
            models: if req.models.is_empty() {
                vec!["*".into()]
            } else {
                req.models
            },
            priority: req.priority,
            timeouts: req.timeouts,
            created_at: t,
            updated_at: t,
        };
        self.store.create_provider(&provider).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "provider.create",
            &provider.id,
            None,
            json!({"name": provider.name, "kind": provider.kind, "base_url": provider.base_url,
                "timeouts": provider.timeouts}),
            serde_json::Value::Null,
            audit_image(&provider),
        )
        .await?;
        Ok(provider)
    }

    /// Replaces a provider's key.
    pub async fn rotate_provider_key(
        &self,
        actor: &Actor,
        current: Provider,
        api_key: ProviderKeyInput,
    ) -> Result<Provider, ApiError> {
        let before = audit_image(&current);
        let mut p = current;
        p.api_key = self.keyring.seal(api_key.0.as_bytes(), p.id.as_bytes());
        p.key_hint = mask_key(&api_key.0);
        p.updated_at = now();
        self.store.update_provider(&p).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "provider.rotate_key",
            &p.id,
            None,
            json!({"name": p.name}),
            before,
            audit_image(&p),
        )
        .await?;
        Ok(p)
    }

    /// Applies `update` (`PATCH /v1/providers/{id}`): base URL, models, priority, timeouts.
    pub async fn update_provider(
        &self,
        actor: &Actor,
        current: Provider,
        update: ProviderUpdate,
    ) -> Result<Provider, ApiError> {
        let before = audit_image(&current);
        let mut p = current;
        if let Some(u) = &update.base_url {
            p.base_url = self.checked_url(u)?;
        }
        if let Some(m) = update.models {
            p.models = if m.is_empty() { vec!["*".into()] } else { m };
        }
        if let Some(prio) = update.priority {
            p.priority = prio;
        }
        if let Some(t) = update.timeouts {
            p.timeouts = t;
        }
        p.updated_at = now();
        self.store.update_provider(&p).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "provider.update",
            &p.id,
            None,
            json!({"name": p.name, "base_url": p.base_url, "models": p.models,
                "priority": p.priority, "timeouts": p.timeouts}),
            before,
            audit_image(&p),
        )
        .await?;
        Ok(p)
    }

    /// Deletes a provider unless a project is bound to it (409 naming the projects).
    pub async fn delete_provider(
        &self,
        actor: &Actor,
        provider: &Provider,
    ) -> Result<(), ApiError> {
        let store = self.store.clone();
        let projects = walk(|page| {
            let store = store.clone();
            async move { store.list_projects(&page).await }
        })
        .await?;
        let users: Vec<&str> = projects
            .iter()
            .filter(|p| p.providers.contains(&provider.id))
            .map(|p| p.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::Conflict {
                code: "in_use",
                message: format!(
                    "provider `{}` is used by project(s) {}; remove it from them first",
                    provider.name,
                    users.join(", ")
                ),
            });
        }
        self.store.delete_provider(&provider.id).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "provider.delete",
            &provider.id,
            None,
            json!({"name": provider.name}),
            audit_image(provider),
            serde_json::Value::Null,
        )
        .await?;
        Ok(())
    }

    /// The plaintext key of a provider (for sealing to proxies and `iron up` comparisons).
    pub fn open_provider_key(&self, p: &Provider) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        self.keyring
            .open(&p.api_key, p.id.as_bytes())
            .map_err(|e| ApiError::Internal(format!("provider {}: {e}", p.id)))
    }
}
