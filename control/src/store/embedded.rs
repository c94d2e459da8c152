//! Embedded store: one redb file on local disk (`design.md` §10), the default of `iron up`.
//!
//! Every trait method is one redb transaction run on the blocking pool, so each mutation
//! (including its index updates and event-log trimming) is atomic and durable on commit.
//! Values are JSON records from [`crate::model`]; secrets inside them are already sealed.
//! Only one process may open the file at a time (redb holds a lock).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use iron_core::wire::ControlEvent;
use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use iron_core::Money;
use iron_core::lease::{LeaseGrant, LeaseReport, LeaseRequest, ReportAck, UsageEvent};

use super::embedded_ledger as ledger;
use super::{Revocation, Store, StoreError, decode, encode};
use crate::model::{
    ApiKeyRecord, AuditEvent, AuditFilter, BudgetUsage, EventBatch, LeasePolicy, LeaseRecord, Page,
    PageRequest, PriceOverride, Project, Provider, SigningKeyRecord, StoredEvent, SweepStats,
    Timestamp, TokenRecord, UsageFilter,
};

type Json = TableDefinition<'static, &'static str, &'static [u8]>;
type Index = TableDefinition<'static, &'static str, &'static str>;

const PROJECTS: Json = TableDefinition::new("projects");
const PROJECT_NAMES: Index = TableDefinition::new("project_names");
const PROVIDERS: Json = TableDefinition::new("providers");
const PROVIDER_NAMES: Index = TableDefinition::new("provider_names");
const TOKENS: Json = TableDefinition::new("tokens");
/// `"<project id>/<token id>"` → `()`: tokens of a project in id order.
const PROJECT_TOKENS: TableDefinition<&str, ()> = TableDefinition::new("project_tokens");
/// Revoked token id → its expiry.
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");
const API_KEYS: Json = TableDefinition::new("api_keys");
const API_KEY_HASHES: Index = TableDefinition::new("api_key_hashes");
const SIGNING_KEYS: Json = TableDefinition::new("signing_keys");
const META: Json = TableDefinition::new("meta");
const AUDIT: Json = TableDefinition::new("audit");
/// Revoked dashboard session id (jti) → its expiry.
const REVOKED_SESSIONS: TableDefinition<&str, u64> = TableDefinition::new("revoked_sessions");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const PRICES: Json = TableDefinition::new("prices");

const EVENT_SEQ: &str = "event_seq";

macro_rules! backend_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}
backend_errors!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(
                "the data file is already open (is another iron-control or `iron up` running \
                 on this data directory?)"
                    .into(),
            ),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// The redb-backed store. Cheap to clone.
/// Most rate-limit counters held in memory (idle ones are dropped first).
const RATE_COUNTERS_MAX: usize = 200_000;

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    retain_events: usize,
    /// Rate-limit windows, in memory only (see [`super`] docs: a restart forgets ≤ 1 min).
    rate: Arc<std::sync::Mutex<iron_core::ratelimit::WindowMap>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path, retain_events: usize) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(path)?;
        #[cfg(unix)]
        {
            // Sealed secrets and key hashes only, but nobody else needs to read it.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let w = db.begin_write()?;
        {
            for t in [
                PROJECTS,
                PROVIDERS,
                TOKENS,
                API_KEYS,
                SIGNING_KEYS,
                META,
                AUDIT,
            ] {
                w.open_table(t)?;
            }
            w.open_table(PRICES)?;
            ledger::create_tables(&w)?;
            for t in [PROJECT_NAMES, PROVIDER_NAMES, API_KEY_HASHES] {
                w.open_table(t)?;
            }
            w.open_table(PROJECT_TOKENS)?;
            w.open_table(REVOKED)?;
            w.open_table(REVOKED_SESSIONS)?;
            w.open_table(EVENTS)?;
            w.open_table(COUNTERS)?;
        }
        w.commit()?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            retain_events: retain_events.max(1),
            rate: Arc::new(std::sync::Mutex::new(iron_core::ratelimit::WindowMap::new(
                RATE_COUNTERS_MAX,
            ))),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read()?;
            f(&r)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Runs `f` in a write transaction; commits when it returns `Ok`, aborts otherwise.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let w = db.begin_write()?;
            let out = f(&w)?;
            w.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

fn get_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match t.get(key)? {
        Some(v) => decode(what, v.value()).map(Some),
        None => Ok(None),
    }
}

/// Up to `limit + 1` JSON values with keys after `cursor`, in key order.
fn page_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &str,
    page: &PageRequest,
    key: impl Fn(&T) -> String,
) -> Result<Page<T>, StoreError> {
    let mut items = Vec::new();
    let iter = match &page.cursor {
        Some(c) => t.range::<&str>((
            std::ops::Bound::Excluded(c.as_str()),
            std::ops::Bound::Unbounded,
        ))?,
        None => t.range::<&str>(..)?,
    };
    for entry in iter {
        let (_, v) = entry?;
        items.push(decode(what, v.value())?);
        if items.len() > page.limit {
            break;
        }
    }
    Ok(Page::from_sorted(items, page.limit, key))
}

fn lookup_by_name<T: serde::de::DeserializeOwned>(
    r: &ReadTransaction,
    names: Index,
    records: Json,
    what: &str,
    name: &str,
) -> Result<Option<T>, StoreError> {
    let id = match r.open_table(names)?.get(name)? {
        Some(id) => id.value().to_owned(),
        None => return Ok(None),
    };
    get_json(&r.open_table(records)?, what, &id)
}

fn revoke_in(
    w: &WriteTransaction,
    token: &mut TokenRecord,
    now: Timestamp,
) -> Result<bool, StoreError> {
    if token.revoked_at.is_some() {
        return Ok(false);
    }
    token.revoked_at = Some(now);
    w.open_table(TOKENS)?
        .insert(token.id.as_str(), encode(token)?.as_slice())?;
    let mut revoked = w.open_table(REVOKED)?;
    // Entries of tokens expired by now are pruned on the way.
    revoked.retain(|_, exp| exp > now)?;
    revoked.insert(token.id.as_str(), token.expires_at)?;
    Ok(true)
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|r| {
            r.open_table(META)?;
            Ok(())
        })
        .await
    }

    async fn create_project(&self, project: &Project) -> Result<(), StoreError> {
        let p = project.clone();
        self.write(move |w| {
            let mut names = w.open_table(PROJECT_NAMES)?;
            let mut records = w.open_table(PROJECTS)?;
            if names.get(p.name.as_str())?.is_some() {
                return Err(StoreError::conflict("project", &p.name));
            }
            if records.get(p.id.as_str())?.is_some() {
                return Err(StoreError::conflict("project", &p.id));
            }
            names.insert(p.name.as_str(), p.id.as_str())?;
            records.insert(p.id.as_str(), encode(&p)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn get_project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        let id = id.to_owned();
        self.read(move |r| get_json(&r.open_table(PROJECTS)?, "project", &id))
            .await
    }

    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        let name = name.to_owned();
        self.read(move |r| lookup_by_name(r, PROJECT_NAMES, PROJECTS, "project", &name))
            .await
    }

    async fn list_projects(&self, page: &PageRequest) -> Result<Page<Project>, StoreError> {
        let page = page.clone();
        self.read(move |r| {
            page_json(&r.open_table(PROJECTS)?, "project", &page, |p: &Project| {
                p.id.clone()
            })
        })
        .await
    }

    async fn update_project(&self, project: &Project) -> Result<(), StoreError> {
        let p = project.clone();
        self.write(move |w| {
            let mut records = w.open_table(PROJECTS)?;
            let old: Project = get_json(&records, "project", &p.id)?
                .ok_or_else(|| StoreError::not_found("project", &p.id))?;
            if old.name != p.name {
                let mut names = w.open_table(PROJECT_NAMES)?;
                if names.get(p.name.as_str())?.is_some() {
                    return Err(StoreError::conflict("project", &p.name));
                }
                names.remove(old.name.as_str())?;
                names.insert(p.name.as_str(), p.id.as_str())?;
            }
            records.insert(p.id.as_str(), encode(&p)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn delete_project(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.write(move |w| {
            let old: Project = get_json(&w.open_table(PROJECTS)?, "project", &id)?
                .ok_or_else(|| StoreError::not_found("project", &id))?;
            let prefix = format!("{id}/");
            let token_ids: Vec<String> = {
                let links = w.open_table(PROJECT_TOKENS)?;
                let mut ids = Vec::new();
                for entry in links.range::<&str>(prefix.as_str()..)? {
                    let (k, _) = entry?;
                    match k.value().strip_prefix(&prefix) {
                        Some(tok) => ids.push(tok.to_owned()),
                        None => break,
                    }
                }
                ids
            };
            let mut revoked = Vec::new();
            for tok in &token_ids {
                let rec: Option<TokenRecord> = get_json(&w.open_table(TOKENS)?, "token", tok)?;
                if let Some(mut rec) = rec
                    && rec.expires_at > now
                    && revoke_in(w, &mut rec, now)?
                {
                    revoked.push(rec);
                }
                w.open_table(TOKENS)?.remove(tok.as_str())?;
                w.open_table(PROJECT_TOKENS)?
                    .remove(format!("{prefix}{tok}").as_str())?;
            }
            ledger::forget_project(w, &id)?;
            w.open_table(PROJECT_NAMES)?.remove(old.name.as_str())?;
            w.open_table(PROJECTS)?.remove(id.as_str())?;
            Ok(revoked)
        })
        .await
    }

    async fn create_provider(&self, provider: &Provider) -> Result<(), StoreError> {
        let p = provider.clone();
        self.write(move |w| {
            let mut names = w.open_table(PROVIDER_NAMES)?;
            let mut records = w.open_table(PROVIDERS)?;
            if names.get(p.name.as_str())?.is_some() {
                return Err(StoreError::conflict("provider", &p.name));
            }
            if records.get(p.id.as_str())?.is_some() {
                return Err(StoreError::conflict("provider", &p.id));
            }
            names.insert(p.name.as_str(), p.id.as_str())?;
            records.insert(p.id.as_str(), encode(&p)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn get_provider(&self, id: &str) -> Result<Option<Provider>, StoreError> {
        let id = id.to_owned();
        self.read(move |r| get_json(&r.open_table(PROVIDERS)?, "provider", &id))
            .await
    }

    async fn provider_by_name(&self, name: &str) -> Result<Option<Provider>, StoreError> {
        let name = name.to_owned();
        self.read(move |r| lookup_by_name(r, PROVIDER_NAMES, PROVIDERS, "provider", &name))
            .await
    }

    async fn list_providers(&self, page: &PageRequest) -> Result<Page<Provider>, StoreError> {
        let page = page.clone();
        self.read(move |r| {
            page_json(
                &r.open_table(PROVIDERS)?,
                "provider",
                &page,
                |p: &Provider| p.id.clone(),
            )
        })
        .await
    }

    async fn update_provider(&self, provider: &Provider) -> Result<(), StoreError> {
        let p = provider.clone();
        self.write(move |w| {
            let mut records = w.open_table(PROVIDERS)?;
            let old: Provider = get_json(&records, "provider", &p.id)?
                .ok_or_else(|| StoreError::not_found("provider", &p.id))?;
            if old.name != p.name {
                let mut names = w.open_table(PROVIDER_NAMES)?;
                if names.get(p.name.as_str())?.is_some() {
                    return Err(StoreError::conflict("provider", &p.name));
                }
                names.remove(old.name.as_str())?;
                names.insert(p.name.as_str(), p.id.as_str())?;
            }
            records.insert(p.id.as_str(), encode(&p)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn delete_provider(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |w| {
            let old: Provider = get_json(&w.open_table(PROVIDERS)?, "provider", &id)?
                .ok_or_else(|| StoreError::not_found("provider", &id))?;
            w.open_table(PROVIDER_NAMES)?.remove(old.name.as_str())?;
            w.open_table(PROVIDERS)?.remove(id.as_str())?;
            Ok(())
        })
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let t = token.clone();
        self.write(move |w| {
            if w.open_table(PROJECTS)?
                .get(t.project_id.as_str())?
                .is_none()
            {
                return Err(StoreError::not_found("project", &t.project_id));
            }
            let mut tokens = w.open_table(TOKENS)?;
            if tokens.get(t.id.as_str())?.is_some() {
                return Err(StoreError::conflict("token", &t.id));
            }
            tokens.insert(t.id.as_str(), encode(&t)?.as_slice())?;
            w.open_table(PROJECT_TOKENS)?
                .insert(format!("{}/{}", t.project_id, t.id).as_str(), ())?;
            Ok(())
        })
        .await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |r| get_json(&r.open_table(TOKENS)?, "token", &id))
            .await
    }

    async fn list_tokens(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError> {
        let page = page.clone();
        let project_id = project_id.map(str::to_owned);
        self.read(move |r| {
            let tokens = r.open_table(TOKENS)?;
            let Some(prj) = project_id else {
                return page_json(&tokens, "token", &page, |t: &TokenRecord| t.id.clone());
            };
            let prefix = format!("{prj}/");
            let start = match &page.cursor {
                Some(c) => format!("{prefix}{c}"),
                None => prefix.clone(),
            };
            let links = r.open_table(PROJECT_TOKENS)?;
            let mut items = Vec::new();
            for entry in links.range::<&str>(start.as_str()..)? {
                let (k, _) = entry?;
                let Some(tok) = k.value().strip_prefix(&prefix).map(str::to_owned) else {
                    break;
                };
                if page.cursor.as_deref() == Some(tok.as_str()) {
                    continue;
                }
                if let Some(rec) = get_json::<TokenRecord>(&tokens, "token", &tok)? {
                    items.push(rec);
                }
                if items.len() > page.limit {
                    break;
                }
            }
            Ok(Page::from_sorted(items, page.limit, |t: &TokenRecord| {
                t.id.clone()
            }))
        })
        .await
    }

    async fn revoke_token(&self, id: &str, now: Timestamp) -> Result<Revocation, StoreError> {
        let id = id.to_owned();
        self.write(move |w| {
            let mut token: TokenRecord = get_json(&w.open_table(TOKENS)?, "token", &id)?
                .ok_or_else(|| StoreError::not_found("token", &id))?;
            let newly_revoked = revoke_in(w, &mut token, now)?;
            Ok(Revocation {
                token,
                newly_revoked,
            })
        })
        .await
    }

    async fn revoked_tokens(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        self.read(move |r| {
            let mut out = Vec::new();
            for entry in r.open_table(REVOKED)?.iter()? {
                let (k, exp) = entry?;
                if exp.value() > now {
                    out.push(k.value().to_owned());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let k = key.clone();
        self.write(move |w| {
            let mut records = w.open_table(API_KEYS)?;
            let mut hashes = w.open_table(API_KEY_HASHES)?;
            if let Some(owner) = hashes.get(k.key_hash.as_str())?
                && owner.value() != k.id
            {
                return Err(StoreError::conflict("api key", &k.id));
            }
            let old: Option<ApiKeyRecord> = get_json(&records, "api key", &k.id)?;
            if let Some(old) = old {
                hashes.remove(old.key_hash.as_str())?;
            }
            hashes.insert(k.key_hash.as_str(), k.id.as_str())?;
            records.insert(k.id.as_str(), encode(&k)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let h = key_hash.to_owned();
        self.read(move |r| lookup_by_name(r, API_KEY_HASHES, API_KEYS, "api key", &h))
            .await
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError> {
        let page = page.clone();
        self.read(move |r| {
            page_json(
                &r.open_table(API_KEYS)?,
                "api key",
                &page,
                |k: &ApiKeyRecord| k.id.clone(),
            )
        })
        .await
    }

    async fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |w| {
            let old: ApiKeyRecord = get_json(&w.open_table(API_KEYS)?, "api key", &id)?
                .ok_or_else(|| StoreError::not_found("api key", &id))?;
            w.open_table(API_KEY_HASHES)?
                .remove(old.key_hash.as_str())?;
            w.open_table(API_KEYS)?.remove(id.as_str())?;
            Ok(())
        })
        .await
    }

    async fn put_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let k = key.clone();
        self.write(move |w| {
            w.open_table(SIGNING_KEYS)?
                .insert(k.kid.as_str(), encode(&k)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.read(|r| {
            let mut out = Vec::new();
            for entry in r.open_table(SIGNING_KEYS)?.iter()? {
                let (_, v) = entry?;
                out.push(decode("signing key", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.read(move |r| {
            Ok(r.open_table(META)?
                .get(key.as_str())?
                .map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.write(move |w| {
            w.open_table(META)?.insert(key.as_str(), value.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let e = event.clone();
        self.write(move |w| {
            w.open_table(AUDIT)?
                .insert(e.id.as_str(), encode(&e)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |r| {
            let t = r.open_table(AUDIT)?;
            let iter = match &page.cursor {
                Some(c) => t.range::<&str>(..c.as_str())?,
                None => t.range::<&str>(..)?,
            };
            let mut items = Vec::new();
            for entry in iter.rev() {
                let (_, v) = entry?;
                let e: AuditEvent = decode("audit event", v.value())?;
                if filter.matches(&e) {
                    items.push(e);
                    if items.len() > page.limit {
                        break;
                    }
                }
            }
            Ok(Page::from_sorted(items, page.limit, |e: &AuditEvent| {
                e.id.clone()
            }))
        })
        .await
    }

    async fn revoke_session(&self, jti: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        let now = crate::model::now();
        self.write(move |w| {
            let mut t = w.open_table(REVOKED_SESSIONS)?;
            // Expired entries are refused by the token's own `exp` anyway.
            t.retain(|_, exp| exp > now)?;
            t.insert(jti.as_str(), expires_at)?;
            Ok(())
        })
        .await
    }

    async fn session_revoked(&self, jti: &str, now: Timestamp) -> Result<bool, StoreError> {
        let jti = jti.to_owned();
        self.read(move |r| {
            Ok(r.open_table(REVOKED_SESSIONS)?
                .get(jti.as_str())?
                .is_some_and(|exp| exp.value() > now))
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |r| get_json(&r.open_table(API_KEYS)?, "api key", &id))
            .await
    }

    async fn append_event(&self, event: &ControlEvent, now: Timestamp) -> Result<u64, StoreError> {
        let event = event.clone();
        let retain = self.retain_events as u64;
        self.write(move |w| {
            let mut counters = w.open_table(COUNTERS)?;
            let id = counters.get(EVENT_SEQ)?.map(|v| v.value()).unwrap_or(0) + 1;
            counters.insert(EVENT_SEQ, id)?;
            let mut events = w.open_table(EVENTS)?;
            events.insert(
                id,
                encode(&StoredEvent {
                    id,
                    time: now,
                    event,
                })?
                .as_slice(),
            )?;
            while events.len()? > retain {
                if events.pop_first()?.is_none() {
                    break;
                }
            }
            Ok(id)
        })
        .await
    }

    async fn events_since(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        self.read(move |r| {
            let last_id = r
                .open_table(COUNTERS)?
                .get(EVENT_SEQ)?
                .map(|v| v.value())
                .unwrap_or(0);
            let t = r.open_table(EVENTS)?;
            let first = t.first()?.map(|(k, _)| k.value());
            let gap = after > last_id
                || (after < last_id && first.is_none_or(|f| f > after.saturating_add(1)));
            let mut events = Vec::new();
            if !gap {
                for entry in t.range(after.saturating_add(1)..)? {
                    let (_, v) = entry?;
                    events.push(decode("event", v.value())?);
                    if events.len() >= limit {
                        break;
                    }
                }
            }
            Ok(EventBatch {
                events,
                gap,
                last_id,
            })
        })
        .await
    }

    async fn last_event_id(&self) -> Result<u64, StoreError> {
        self.read(|r| {
            Ok(r.open_table(COUNTERS)?
                .get(EVENT_SEQ)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn budget_usage(
        &self,
        project_id: &str,
        token_id: Option<&str>,
        now: Timestamp,
    ) -> Result<BudgetUsage, StoreError> {
        let (project_id, token_id) = (project_id.to_owned(), token_id.map(str::to_owned));
        self.read(move |r| ledger::budget_usage(r, &project_id, token_id.as_deref(), now))
            .await
    }

    async fn grant_lease(
        &self,
        req: &LeaseRequest,
        lease_id: &str,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<LeaseGrant, StoreError> {
        let (req, id, policy) = (req.clone(), lease_id.to_owned(), *policy);
        self.write(move |w| ledger::grant(w, &req, &id, now, &policy))
            .await
    }

    async fn extend_lease(
        &self,
        lease_id: &str,
        requested: Money,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<LeaseGrant, StoreError> {
        let (id, policy) = (lease_id.to_owned(), *policy);
        self.write(move |w| ledger::extend(w, &id, requested, now, &policy))
            .await
    }

    async fn report_lease(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError> {
        let (id, report, policy) = (lease_id.to_owned(), report.clone(), *policy);
        self.write(move |w| ledger::report(w, &id, &report, false, now, &policy))
            .await
    }

    async fn release_lease(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError> {
        let (id, report, policy) = (lease_id.to_owned(), report.clone(), *policy);
        self.write(move |w| ledger::report(w, &id, &report, true, now, &policy))
            .await
    }

    async fn expire_leases(
        &self,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<SweepStats, StoreError> {
        let policy = *policy;
        self.write(move |w| ledger::expire(w, now, &policy)).await
    }

    async fn get_lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let id = lease_id.to_owned();
        self.read(move |r| ledger::get_lease(r, &id)).await
    }

    async fn list_usage(
        &self,
        filter: &UsageFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |r| ledger::list_usage(r, &filter, &page))
            .await
    }

    async fn put_price(&self, price: &PriceOverride) -> Result<(), StoreError> {
        let p = price.clone();
        self.write(move |w| {
            w.open_table(PRICES)?
                .insert(p.model.as_str(), encode(&p)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn list_prices(&self) -> Result<Vec<PriceOverride>, StoreError> {
        self.read(|r| {
            let mut out = Vec::new();
            for entry in r.open_table(PRICES)?.iter()? {
                let (_, v) = entry?;
                out.push(decode("price", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn rate_take(
        &self,
        takes: &[iron_core::ratelimit::RateTake],
        now_ms: u64,
    ) -> Result<Vec<iron_core::ratelimit::RateGrant>, StoreError> {
        let mut map = self
            .rate
            .lock()
            .map_err(|_| StoreError::Backend("rate-limit state poisoned".into()))?;
        Ok(map.take_all(takes, now_ms))
    }
}
