//! Projects: create, rename, budgets, provider bindings, delete (with its tokens).

use iron_core::Money;
use iron_core::pii::PiiPolicy;
use iron_core::wire::ControlEvent;
use serde_json::json;

use super::{Actor, Service, audit_image, shown};
use crate::error::ApiError;
use crate::model::{Budget, Period, Project, new_id, now};
use crate::validate::Name;

/// A validated project creation request.
#[derive(Clone, Debug)]
pub struct NewProject {
    pub name: Name,
    pub budget: Budget,
    /// Provider ids or names; empty = all providers.
    pub providers: Vec<String>,
    pub allowed_models: Vec<String>,
    pub pii: Option<PiiPolicy>,
}

/// A validated partial update; `None` leaves a field unchanged.
#[derive(Clone, Debug, Default)]
pub struct ProjectPatch {
    pub name: Option<Name>,
    /// `Some(None)` removes the limit.
    pub budget_limit: Option<Option<Money>>,
    pub period: Option<Period>,
    pub providers: Option<Vec<String>>,
    pub allowed_models: Option<Vec<String>>,
    /// `Some(None)` resets to the default policy.
    pub pii: Option<Option<PiiPolicy>>,
    /// The new RPM/TPM limits (validated).
    pub rate_limits: Option<iron_core::ratelimit::RateLimits>,
}

pub(crate) fn usd(m: Option<Money>) -> serde_json::Value {
    match m {
        Some(m) => json!(m.to_string().trim_start_matches('$')),
        None => serde_json::Value::Null,
    }
}

impl Service {
    /// Finds a project by id (`prj_…`) or name. 404 otherwise.
    pub async fn resolve_project(&self, id_or_name: &str) -> Result<Project, ApiError> {
        let found = if id_or_name.starts_with("prj_") {
            self.store.get_project(id_or_name).await?
        } else {
            self.store.project_by_name(id_or_name).await?
        };
        found.ok_or_else(|| {
            ApiError::not_found(format!("project `{}` not found", shown(id_or_name)))
        })
    }

    /// Resolves provider ids or names to ids; unknown ones are a 400.
    async fn provider_ids(&self, refs: &[String]) -> Result<Vec<String>, ApiError> {
        let mut ids = Vec::with_capacity(refs.len());
        for r in refs {
            let p = if r.starts_with("prv_") {
                self.store.get_provider(r).await?
            } else {
                self.store.provider_by_name(r).await?
            };
            let p = p.ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_provider",
                    format!("providers: unknown provider `{}`", shown(r)),
                )
            })?;
            if !ids.contains(&p.id) {
                ids.push(p.id);
            }
        }
        Ok(ids)
    }

    pub async fn create_project(
        &self,
        actor: &Actor,
        req: NewProject,
    ) -> Result<Project, ApiError> {
        let providers = self.provider_ids(&req.providers).await?;
        let t = now();
        let project = Project {
            id: new_id("prj"),
            name: req.name.into_string(),
            budget: req.budget,
            providers,
            allowed_models: req.allowed_models,
            pii: req.pii,
            rate_limits: iron_core::ratelimit::RateLimits::NONE,
            created_at: t,
            updated_at: t,
        };
        self.store.create_project(&project).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "project.create",
            &project.id,
            Some(&project.id),
            json!({"name": project.name, "budget_usd": usd(project.budget.limit), "period": project.budget.period}),
            serde_json::Value::Null,
            audit_image(&project),
        )
        .await?;
        Ok(project)
    }

    pub async fn update_project(
        &self,
        actor: &Actor,
        current: Project,
        patch: ProjectPatch,
    ) -> Result<Project, ApiError> {
        let before = audit_image(&current);
        let mut p = current;
        let mut changed = Vec::new();
        if let Some(name) = patch.name {
            p.name = name.into_string();
            changed.push("name");
        }
        if let Some(limit) = patch.budget_limit {
            p.budget.limit = limit;
            changed.push("budget_usd");
        }
        if let Some(period) = patch.period {
            p.budget.period = period;
            changed.push("period");
        }
        if let Some(refs) = patch.providers {
            p.providers = self.provider_ids(&refs).await?;
            changed.push("providers");
        }
        if let Some(models) = patch.allowed_models {
            p.allowed_models = models;
            changed.push("allowed_models");
        }
        if let Some(pii) = patch.pii {
            p.pii = pii;
            changed.push("pii");
        }
        if let Some(limits) = patch.rate_limits {
            p.rate_limits = limits;
            changed.push("rate_limits");
        }
        p.updated_at = now();
        self.store.update_project(&p).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "project.update",
            &p.id,
            Some(&p.id),
            json!({"name": p.name, "fields": changed, "budget_usd": usd(p.budget.limit), "period": p.budget.period, "rpm": p.rate_limits.rpm, "tpm": p.rate_limits.tpm}),
            before,
            audit_image(&p),
        )
        .await?;
        Ok(p)
    }

    pub async fn set_project_budget(
        &self,
        actor: &Actor,
        current: Project,
        limit: Option<Money>,
        period: Option<Period>,
    ) -> Result<Project, ApiError> {
        let before = audit_image(&current);
        let mut p = current;
        p.budget.limit = limit;
        if let Some(period) = period {
            p.budget.period = period;
        }
        p.updated_at = now();
        self.store.update_project(&p).await?;
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "project.set_budget",
            &p.id,
            Some(&p.id),
            json!({"budget_usd": usd(p.budget.limit), "period": p.budget.period}),
            before,
            audit_image(&p),
        )
        .await?;
        Ok(p)
    }

    /// Deletes a project; its live tokens are revoked (one `token_revoked` event each).
    pub async fn delete_project(
        &self,
        actor: &Actor,
        project: &Project,
    ) -> Result<usize, ApiError> {
        let revoked = self.store.delete_project(&project.id, now()).await?;
        for t in &revoked {
            self.emit(ControlEvent::TokenRevoked {
                token_id: t.id.clone(),
            })
            .await?;
        }
        self.emit(ControlEvent::ConfigChanged).await?;
        self.audit_change(
            actor,
            "project.delete",
            &project.id,
            Some(&project.id),
            json!({"name": project.name, "revoked_tokens": revoked.len()}),
            audit_image(project),
            serde_json::Value::Null,
        )
        .await?;
        Ok(revoked.len())
    }
}
