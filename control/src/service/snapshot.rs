//! The proxy snapshot (`GET /internal/v1/snapshot`): keys, projects, providers with keys
//! re-sealed under the transit key (AAD = provider id), and the revocation set.

use iron_core::wire::{ProjectSpec, ProviderSpec, Snapshot};

use super::{Service, walk};
use crate::error::ApiError;
use crate::model::now;

impl Service {
    pub async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        // Version first: a change racing with this read is replayed (harmlessly) over SSE.
        let version = self.store.last_event_id().await?;
        let keys = self.public_keys().await?;
        let store = self.store.clone();
        let projects = walk(|page| {
            let store = store.clone();
            async move { store.list_projects(&page).await }
        })
        .await?;
        let store = self.store.clone();
        let providers = walk(|page| {
            let store = store.clone();
            async move { store.list_providers(&page).await }
        })
        .await?;
        let mut specs = Vec::with_capacity(providers.len());
        for p in providers {
            let key = self.open_provider_key(&p)?;
            specs.push(ProviderSpec {
                api_key: self.transit.seal(&key, p.id.as_bytes()),
                id: p.id,
                name: p.name,
                kind: p.kind,
                base_url: p.base_url,
                models: p.models,
                priority: p.priority,
                timeouts: p.timeouts,
            });
        }
        Ok(Snapshot {
            version,
            keys,
            projects: projects
                .into_iter()
                .map(|p| ProjectSpec {
                    id: p.id,
                    name: p.name,
                    providers: p.providers,
                    allowed_models: p.allowed_models,
                    pii: p.pii,
                    rate_limits: p.rate_limits,
                })
                .collect(),
            providers: specs,
            revoked: self.store.revoked_tokens(now()).await?,
            prices: self
                .store
                .list_prices()
                .await?
                .iter()
                .map(|p| (p.model.clone(), crate::api::pricing::model_price(p)))
                .collect(),
        })
    }
}
