//! # iron-control
//!
//! Iron's control service (`design.md` §6, §9, §10): projects, IC tokens, provider
//! deployments and budgets behind a REST API, plus the internal API that proxies poll and
//! stream, and the lease protocol through which they borrow budget and report usage
//! (`api::leases` → `service` leases → atomic store operations; an expiry sweep runs in the
//! background).
//!
//! Flow: `config` (TOML + env) → `server::build_state` (store, master-key check, signing
//! key, bootstrap admin key, event poller) → `api::app` (axum router) → handlers in `api::*`
//! → `service` (rules, sealing, events, audit) → `store` (embedded redb or Redis).
//! Events fan out through `events` to SSE subscribers (`/internal/v1/events`,
//! `/v1/events`).
//!
//! - [`model`]: stored records. [`store`]: the `Store` trait and its two implementations.
//! - [`service`]: domain logic shared by the API and `iron up`.
//! - [`api`]: routes, extractors, middleware, OpenAPI document.
//! - [`config`], [`keys`], [`validate`], [`events`], [`error`], [`server`], [`local`],
//!   [`metrics`].

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod model;
pub mod server;
pub mod service;
pub mod store;
pub mod validate;

use std::sync::Arc;

pub use api::{app, openapi};
pub use server::{Control, StartupError, build_state, serve};

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub svc: Arc<service::Service>,
    pub metrics: Arc<metrics::Metrics>,
}
