//! Admin API keys: created with a role, shown once, stored as SHA-256.

use serde_json::json;
use zeroize::Zeroizing;

use super::{Actor, Service};
use crate::error::ApiError;
use crate::keys::{Secret, generate_api_key, hash_api_key, secrets_equal};
use crate::model::{ApiKeyRecord, Role, new_id, now};
use crate::validate::Name;

/// Id of the API key registered from `IRON_BOOTSTRAP_ADMIN_KEY` / `iron up`.
pub const BOOTSTRAP_KEY_ID: &str = "ak_bootstrap";

impl Service {
    /// Looks up the key presented by a caller. `None` when unknown.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<ApiKeyRecord>, ApiError> {
        if !presented.starts_with(crate::keys::API_KEY_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        let hash = hash_api_key(presented);
        let rec = self.store.api_key_by_hash(&hash).await?;
        Ok(rec.filter(|r| secrets_equal(r.key_hash.as_bytes(), hash.as_bytes())))
    }

    /// Resolves `project:<id-or-name>` roles to `project:<id>`.
    pub async fn resolve_role(&self, role: Role) -> Result<Role, ApiError> {
        match role {
            Role::Project(p) => {
                let project = self.resolve_project(&p).await.map_err(|_| {
                    ApiError::bad_request(
                        "unknown_project",
                        format!("role: unknown project `{}`", super::shown(&p)),
                    )
                })?;
                Ok(Role::Project(project.id))
            }
            other => Ok(other),
        }
    }

    pub async fn create_api_key(
        &self,
        actor: &Actor,
        name: Name,
        role: Role,
    ) -> Result<(ApiKeyRecord, Zeroizing<String>), ApiError> {
        let role = self.resolve_role(role).await?;
        let key = generate_api_key();
        let rec = ApiKeyRecord {
            id: new_id("ak"),
            name: name.into_string(),
            role,
            key_hash: hash_api_key(&key),
            created_at: now(),
        };
        self.store.put_api_key(&rec).await?;
        let project = match &rec.role {
            Role::Project(p) => Some(p.as_str()),
            _ => None,
        };
        self.audit_change(
            actor,
            "api_key.create",
            &rec.id,
            project,
            json!({"name": rec.name, "role": rec.role.to_string()}),
            serde_json::Value::Null,
            super::audit_image(&rec),
        )
        .await?;
        Ok((rec, key))
    }

    pub async fn delete_api_key(&self, actor: &Actor, id: &str) -> Result<(), ApiError> {
        let before = self.store.get_api_key(id).await?;
        self.store.delete_api_key(id).await?;
        let project = match before.as_ref().map(|k| &k.role) {
            Some(Role::Project(p)) => Some(p.as_str()),
            _ => None,
        };
        self.audit_change(
            actor,
            "api_key.delete",
            id,
            project,
            serde_json::Value::Null,
            super::audit_image(&before),
            serde_json::Value::Null,
        )
        .await?;
        Ok(())
    }

    /// Registers (or re-registers) the bootstrap admin key under [`BOOTSTRAP_KEY_ID`].
    pub async fn ensure_bootstrap_key(&self, key: &Secret) -> Result<(), ApiError> {
        let hash = hash_api_key(key.expose());
        if let Some(existing) = self.store.api_key_by_hash(&hash).await?
            && existing.role == Role::Admin
        {
            return Ok(());
        }
        let rec = ApiKeyRecord {
            id: BOOTSTRAP_KEY_ID.into(),
            name: "bootstrap".into(),
            role: Role::Admin,
            key_hash: hash,
            created_at: now(),
        };
        self.store.put_api_key(&rec).await?;
        self.audit(
            &Actor::system(),
            "api_key.bootstrap",
            BOOTSTRAP_KEY_ID,
            None,
            serde_json::Value::Null,
        )
        .await
    }
}
