//! Budget leases and the usage log of the embedded store (`design.md` §6), each operation
//! one redb write transaction (see [`super::embedded::EmbeddedStore`]). The rules are the
//! ones in the [`super`] module docs; the Redis store runs the same in Lua.
//!
//! Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `ledger` | `<prj>\|spent:<period key>`, `<prj>\|out`, `<prj>\|n`, and `<prj>\|tok:<id>:…` | u64 |
//! | `leases` | lease id | [`LeaseRecord`] JSON |
//! | `lease_expiry` | `<expires_at:020>\|<lease id>` (open leases) | () |
//! | `lease_purge` | `<purge_at:020>\|<lease id>` (tombstones) | () |
//! | `usage` | `<prj>/<seq:020>` | [`UsageEvent`] JSON |
//! | `usage_ids` | `<prj>\|<event id>` | recorded at (ms) |
//! | `usage_id_times` | `<ms:020>\|<prj>\|<event id>` | () |

use iron_core::Money;
use iron_core::lease::{Denial, LeaseGrant, LeaseReport, LeaseRequest, ReportAck, UsageEvent};
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::rules::{Headroom, grant_amount, min_remaining};
use super::{StoreError, decode, encode};
use crate::model::{
    BudgetUsage, LeasePolicy, LeaseRecord, LeaseState, MAX_GRANT, Page, PageRequest, Period,
    Project, SweepStats, Timestamp, TokenRecord, USAGE_SCAN_BUDGET, UsageFilter, period_key,
};

type Json = TableDefinition<'static, &'static str, &'static [u8]>;

pub(super) const LEDGER: TableDefinition<&str, u64> = TableDefinition::new("ledger");
pub(super) const LEASES: Json = TableDefinition::new("leases");
pub(super) const LEASE_EXPIRY: TableDefinition<&str, ()> = TableDefinition::new("lease_expiry");
pub(super) const LEASE_PURGE: TableDefinition<&str, ()> = TableDefinition::new("lease_purge");
pub(super) const USAGE: Json = TableDefinition::new("usage");
pub(super) const USAGE_IDS: TableDefinition<&str, u64> = TableDefinition::new("usage_ids");
pub(super) const USAGE_ID_TIMES: TableDefinition<&str, ()> = TableDefinition::new("usage_id_times");

const PROJECTS: Json = TableDefinition::new("projects");
const TOKENS: Json = TableDefinition::new("tokens");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const USAGE_SEQ: &str = "usage_seq";

/// Creates the tables (called when the database is opened).
pub(super) fn create_tables(w: &WriteTransaction) -> Result<(), StoreError> {
    w.open_table(LEDGER)?;
    w.open_table(LEASES)?;
    w.open_table(LEASE_EXPIRY)?;
    w.open_table(LEASE_PURGE)?;
    w.open_table(USAGE)?;
    w.open_table(USAGE_IDS)?;
    w.open_table(USAGE_ID_TIMES)?;
    Ok(())
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

fn time_key(t: u64, id: &str) -> String {
    format!("{t:020}|{id}")
}

/// The budget counters of one project (and its tokens) inside a write transaction.
struct Books<'a, 't> {
    t: &'a mut Table<'t, &'static str, u64>,
    prj: String,
}

impl Books<'_, '_> {
    fn key(&self, field: &str) -> String {
        format!("{}|{field}", self.prj)
    }

    fn get(&self, field: &str) -> Result<u64, StoreError> {
        Ok(self
            .t
            .get(self.key(field).as_str())?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Adds a signed delta, clamping at zero (a correction never makes a counter negative).
    fn add(&mut self, field: &str, delta: i128) -> Result<(), StoreError> {
        if delta == 0 {
            return Ok(());
        }
        let key = self.key(field);
        let cur = i128::from(self.t.get(key.as_str())?.map(|v| v.value()).unwrap_or(0));
        let next = u64::try_from((cur + delta).max(0)).unwrap_or(u64::MAX);
        if next == 0 {
            self.t.remove(key.as_str())?;
        } else {
            self.t.insert(key.as_str(), next)?;
        }
        Ok(())
    }
}

fn signed(m: Money) -> i128 {
    i128::from(m.micros())
}

/// The budgets a lease operation works against.
struct Limits {
    project_limit: Option<u64>,
    project_key: String,
    token_limit: Option<u64>,
    token_key: String,
    /// Counter prefix of the token: `tok:<id>:`.
    tok: String,
    /// The token is gone, revoked or expired.
    token_invalid: bool,
}

impl Limits {
    fn new(
        project: &Project,
        token_id: &str,
        token: Option<&TokenRecord>,
        fallback: Period,
        now: Timestamp,
    ) -> Self {
        let period = token.map_or(fallback, |t| t.budget.period);
        Limits {
            project_limit: project.budget.limit.map(Money::micros),
            project_key: period_key(project.budget.period, now),
            token_limit: token.and_then(|t| t.budget.limit).map(Money::micros),
            token_key: period_key(period, now),
            tok: format!("tok:{token_id}:"),
            token_invalid: token.is_none_or(|t| t.revoked_at.is_some() || t.expires_at <= now),
        }
    }

    fn tf(&self, field: &str) -> String {
        format!("{}{field}", self.tok)
    }

    fn remaining(&self, b: &Books<'_, '_>) -> Result<(Option<u64>, Option<u64>), StoreError> {
        let rem = |limit: Option<u64>, spent: u64, out: u64| {
            limit.map(|l| l.saturating_sub(spent).saturating_sub(out))
        };
        let p = rem(
            self.project_limit,
            b.get(&format!("spent:{}", self.project_key))?,
            b.get("out")?,
        );
        let t = rem(
            self.token_limit,
            b.get(&self.tf(&format!("spent:{}", self.token_key)))?,
            b.get(&self.tf("out"))?,
        );
        Ok((p, t))
    }

    fn budget_remaining(&self, b: &Books<'_, '_>) -> Result<Money, StoreError> {
        let (p, t) = self.remaining(b)?;
        Ok(Money(min_remaining(p, t).unwrap_or(u64::MAX)))
    }

    fn grant_amount(
        &self,
        b: &Books<'_, '_>,
        requested: Money,
        min_lease: Money,
        self_open: u64,
    ) -> Result<u64, StoreError> {
        let (p, t) = self.remaining(b)?;
        let budgets = [
            Headroom {
                remaining: p,
                others_open: b.get("n")?.saturating_sub(self_open),
            },
            Headroom {
                remaining: t,
                others_open: b.get(&self.tf("n"))?.saturating_sub(self_open),
            },
        ];
        Ok(grant_amount(
            requested.min(MAX_GRANT).micros(),
            &budgets,
            min_lease.micros(),
        ))
    }

    /// Moves `l.spent → new_spent` on the counters (outstanding only while open).
    fn apply_spent(
        &self,
        b: &mut Books<'_, '_>,
        l: &mut LeaseRecord,
        new_spent: Money,
    ) -> Result<(), StoreError> {
        let d = signed(new_spent) - signed(l.spent);
        if l.state == LeaseState::Open {
            let od = signed(l.granted.saturating_sub(new_spent))
                - signed(l.granted.saturating_sub(l.spent));
            b.add("out", od)?;
            b.add(&self.tf("out"), od)?;
        }
        b.add(&format!("spent:{}", self.project_key), d)?;
        b.add(&self.tf(&format!("spent:{}", self.token_key)), d)?;
        l.spent = new_spent;
        Ok(())
    }

    /// Expired → open: the expiry charge moves back from spent to outstanding.
    fn revive(&self, b: &mut Books<'_, '_>, l: &mut LeaseRecord) -> Result<(), StoreError> {
        let x = signed(l.expiry_charge);
        b.add(&format!("spent:{}", l.expiry_project_key), -x)?;
        b.add(&self.tf(&format!("spent:{}", l.expiry_token_key)), -x)?;
        b.add("out", x)?;
        b.add(&self.tf("out"), x)?;
        b.add("n", 1)?;
        b.add(&self.tf("n"), 1)?;
        l.state = LeaseState::Open;
        l.expiry_charge = Money::ZERO;
        l.expiry_project_key.clear();
        l.expiry_token_key.clear();
        l.purge_at = 0;
        Ok(())
    }

    /// Open or expired → released: the unspent part (or the expiry charge) goes back.
    fn close(
        &self,
        b: &mut Books<'_, '_>,
        l: &mut LeaseRecord,
        purge_at: Timestamp,
    ) -> Result<(), StoreError> {
        match l.state {
            LeaseState::Open => {
                let o = signed(l.granted.saturating_sub(l.spent));
                b.add("out", -o)?;
                b.add(&self.tf("out"), -o)?;
                b.add("n", -1)?;
                b.add(&self.tf("n"), -1)?;
            }
            LeaseState::Expired => {
                let x = signed(l.expiry_charge);
                b.add(&format!("spent:{}", l.expiry_project_key), -x)?;
                b.add(&self.tf(&format!("spent:{}", l.expiry_token_key)), -x)?;
                l.expiry_charge = Money::ZERO;
            }
            LeaseState::Released => return Ok(()),
        }
        l.state = LeaseState::Released;
        l.purge_at = purge_at;
        Ok(())
    }

    fn ack(&self, b: &Books<'_, '_>, l: &LeaseRecord) -> Result<ReportAck, StoreError> {
        Ok(ReportAck {
            lease_remaining: l.outstanding(),
            budget_remaining: self.budget_remaining(b)?,
            revoked: self.token_invalid,
        })
    }
}

fn denial(denied: Denial, lease_id: &str, expires_at: u64, remaining: Money) -> LeaseGrant {
    LeaseGrant {
        lease_id: lease_id.to_owned(),
        granted: Money::ZERO,
        expires_at,
        budget_remaining: remaining,
        denied: Some(denied),
    }
}

/// Moves a lease's entry in the open-lease expiry index.
fn reindex_expiry(
    w: &WriteTransaction,
    id: &str,
    old: Option<u64>,
    new: Option<u64>,
) -> Result<(), StoreError> {
    let mut t = w.open_table(LEASE_EXPIRY)?;
    if let Some(o) = old {
        t.remove(time_key(o, id).as_str())?;
    }
    if let Some(n) = new {
        t.insert(time_key(n, id).as_str(), ())?;
    }
    Ok(())
}

fn reindex_purge(w: &WriteTransaction, id: &str, old: u64, new: u64) -> Result<(), StoreError> {
    let mut t = w.open_table(LEASE_PURGE)?;
    if old != 0 {
        t.remove(time_key(old, id).as_str())?;
    }
    if new != 0 {
        t.insert(time_key(new, id).as_str(), ())?;
    }
    Ok(())
}

fn put_lease(w: &WriteTransaction, l: &LeaseRecord) -> Result<(), StoreError> {
    w.open_table(LEASES)?
        .insert(l.id.as_str(), encode(l)?.as_slice())?;
    Ok(())
}

fn load_project(w: &WriteTransaction, id: &str) -> Result<Option<Project>, StoreError> {
    get_json(&w.open_table(PROJECTS)?, "project", id)
}

fn load_token(w: &WriteTransaction, id: &str) -> Result<Option<TokenRecord>, StoreError> {
    get_json(&w.open_table(TOKENS)?, "token", id)
}

pub(super) fn grant(
    w: &WriteTransaction,
    req: &LeaseRequest,
    lease_id: &str,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Result<LeaseGrant, StoreError> {
    let Some(token) = load_token(w, &req.token_id)? else {
        return Ok(denial(Denial::UnknownToken, "", 0, Money::ZERO));
    };
    let Some(project) = load_project(w, &token.project_id)? else {
        return Ok(denial(Denial::UnknownToken, "", 0, Money::ZERO));
    };
    let lim = Limits::new(&project, &token.id, Some(&token), token.budget.period, now);
    let mut table = w.open_table(LEDGER)?;
    let mut b = Books {
        t: &mut table,
        prj: project.id.clone(),
    };
    if lim.token_invalid {
        return Ok(denial(
            Denial::TokenRevoked,
            "",
            0,
            lim.budget_remaining(&b)?,
        ));
    }
    let g = lim.grant_amount(&b, req.requested, policy.min_lease, 0)?;
    if g == 0 {
        return Ok(denial(
            Denial::BudgetExceeded,
            "",
            0,
            lim.budget_remaining(&b)?,
        ));
    }
    let expires_at = now.saturating_add(policy.ttl_secs);
    let lease = LeaseRecord {
        id: lease_id.to_owned(),
        token_id: token.id.clone(),
        project_id: project.id.clone(),
        proxy_id: req.proxy_id.clone(),
        granted: Money(g),
        spent: Money::ZERO,
        seq: 0,
        expires_at,
        state: LeaseState::Open,
        token_period: token.budget.period,
        expiry_charge: Money::ZERO,
        expiry_project_key: String::new(),
        expiry_token_key: String::new(),
        created_at: now,
        purge_at: 0,
    };
    let gi = i128::from(g);
    b.add("out", gi)?;
    b.add(&lim.tf("out"), gi)?;
    b.add("n", 1)?;
    b.add(&lim.tf("n"), 1)?;
    let remaining = lim.budget_remaining(&b)?;
    drop(table);
    put_lease(w, &lease)?;
    reindex_expiry(w, lease_id, None, Some(expires_at))?;
    Ok(LeaseGrant {
        lease_id: lease_id.to_owned(),
        granted: Money(g),
        expires_at,
        budget_remaining: remaining,
        denied: None,
    })
}

/// A lease with the budgets it works against.
fn open_lease(
    w: &WriteTransaction,
    lease_id: &str,
    now: Timestamp,
) -> Result<(LeaseRecord, Limits), StoreError> {
    let lease: LeaseRecord = get_json(&w.open_table(LEASES)?, "lease", lease_id)?
        .ok_or_else(|| StoreError::not_found("lease", lease_id))?;
    let project = load_project(w, &lease.project_id)?
        .ok_or_else(|| StoreError::not_found("lease", lease_id))?;
    let token = load_token(w, &lease.token_id)?;
    let lim = Limits::new(
        &project,
        &lease.token_id,
        token.as_ref(),
        lease.token_period,
        now,
    );
    Ok((lease, lim))
}

pub(super) fn extend(
    w: &WriteTransaction,
    lease_id: &str,
    requested: Money,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Result<LeaseGrant, StoreError> {
    let (mut l, lim) = open_lease(w, lease_id, now)?;
    if l.state == LeaseState::Released {
        return Err(StoreError::not_found("lease", lease_id));
    }
    let before = l.clone();
    let mut table = w.open_table(LEDGER)?;
    let mut b = Books {
        t: &mut table,
        prj: l.project_id.clone(),
    };
    if lim.token_invalid {
        let remaining = lim.budget_remaining(&b)?;
        return Ok(denial(
            Denial::TokenRevoked,
            lease_id,
            l.expires_at,
            remaining,
        ));
    }
    if l.state == LeaseState::Expired {
        lim.revive(&mut b, &mut l)?;
    }
    // An overspent lease: the overspend is already spent; what follows is backed in full.
    if l.spent > l.granted {
        l.granted = l.spent;
    }
    let g = lim.grant_amount(&b, requested, policy.min_lease, 1)?;
    let gi = i128::from(g);
    b.add("out", gi)?;
    b.add(&lim.tf("out"), gi)?;
    l.granted = l.granted.saturating_add(Money(g));
    l.expires_at = now.saturating_add(policy.ttl_secs);
    let remaining = lim.budget_remaining(&b)?;
    drop(table);
    save_changes(w, &before, &l)?;
    if g == 0 {
        return Ok(denial(
            Denial::BudgetExceeded,
            lease_id,
            l.expires_at,
            remaining,
        ));
    }
    Ok(LeaseGrant {
        lease_id: lease_id.to_owned(),
        granted: Money(g),
        expires_at: l.expires_at,
        budget_remaining: remaining,
        denied: None,
    })
}

/// Writes a changed lease and keeps both indexes in step.
fn save_changes(
    w: &WriteTransaction,
    before: &LeaseRecord,
    l: &LeaseRecord,
) -> Result<(), StoreError> {
    let was_open = (before.state == LeaseState::Open).then_some(before.expires_at);
    let is_open = (l.state == LeaseState::Open).then_some(l.expires_at);
    if was_open != is_open {
        reindex_expiry(w, &l.id, was_open, is_open)?;
    }
    if before.purge_at != l.purge_at {
        reindex_purge(w, &l.id, before.purge_at, l.purge_at)?;
    }
    put_lease(w, l)
}

/// Appends events not recorded yet; returns how many were added.
fn append_events(
    w: &WriteTransaction,
    lease: &LeaseRecord,
    events: &[UsageEvent],
    now_ms: u64,
) -> Result<usize, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut ids = w.open_table(USAGE_IDS)?;
    let mut times = w.open_table(USAGE_ID_TIMES)?;
    let mut usage = w.open_table(USAGE)?;
    let mut counters = w.open_table(COUNTERS)?;
    let mut seq = counters.get(USAGE_SEQ)?.map(|v| v.value()).unwrap_or(0);
    let mut added = 0;
    for e in events {
        let id_key = format!("{}|{}", lease.project_id, e.id);
        if ids.get(id_key.as_str())?.is_some() {
            continue;
        }
        ids.insert(id_key.as_str(), now_ms)?;
        times.insert(time_key(now_ms, &id_key).as_str(), ())?;
        seq += 1;
        let mut e = e.clone();
        e.project_id.clone_from(&lease.project_id);
        e.token_id.clone_from(&lease.token_id);
        usage.insert(
            format!("{}/{seq:020}", lease.project_id).as_str(),
            encode(&e)?.as_slice(),
        )?;
        added += 1;
    }
    counters.insert(USAGE_SEQ, seq)?;
    Ok(added)
}

pub(super) fn report(
    w: &WriteTransaction,
    lease_id: &str,
    report: &LeaseReport,
    release: bool,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Result<ReportAck, StoreError> {
    let (mut l, lim) = open_lease(w, lease_id, now)?;
    let before = l.clone();
    let fresh = report.seq > l.seq;
    let mut table = w.open_table(LEDGER)?;
    let mut b = Books {
        t: &mut table,
        prj: l.project_id.clone(),
    };
    if fresh {
        if l.state == LeaseState::Expired && !release {
            lim.revive(&mut b, &mut l)?;
        }
        lim.apply_spent(&mut b, &mut l, report.spent)?;
        l.seq = report.seq;
        if l.state == LeaseState::Open {
            l.expires_at = now.saturating_add(policy.ttl_secs);
        }
    }
    if release {
        lim.close(&mut b, &mut l, now.saturating_add(policy.retain_secs))?;
    }
    let ack = lim.ack(&b, &l)?;
    drop(table);
    if fresh {
        append_events(w, &l, &report.events, now.saturating_mul(1000))?;
    }
    if l != before {
        save_changes(w, &before, &l)?;
    }
    Ok(ack)
}

pub(super) fn expire(
    w: &WriteTransaction,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Result<SweepStats, StoreError> {
    let mut stats = SweepStats::default();
    let end = time_key(now, "~");
    let due: Vec<String> = {
        let t = w.open_table(LEASE_EXPIRY)?;
        let mut out = Vec::new();
        for entry in t.range::<&str>(..=end.as_str())? {
            let (k, _) = entry?;
            out.push(k.value().to_owned());
        }
        out
    };
    for key in due {
        w.open_table(LEASE_EXPIRY)?.remove(key.as_str())?;
        let Some((_, id)) = key.split_once('|') else {
            continue;
        };
        let lease: Option<LeaseRecord> = get_json(&w.open_table(LEASES)?, "lease", id)?;
        let Some(mut l) = lease.filter(|l| l.state == LeaseState::Open) else {
            continue;
        };
        let project = load_project(w, &l.project_id)?;
        let project_key = project
            .as_ref()
            .map_or_else(|| "total".to_owned(), |p| period_key(p.budget.period, now));
        let token_key = period_key(l.token_period, now);
        let x = l.granted.saturating_sub(l.spent);
        {
            let mut table = w.open_table(LEDGER)?;
            let mut b = Books {
                t: &mut table,
                prj: l.project_id.clone(),
            };
            let tok = format!("tok:{}:", l.token_id);
            b.add("out", -signed(x))?;
            b.add(&format!("{tok}out"), -signed(x))?;
            b.add("n", -1)?;
            b.add(&format!("{tok}n"), -1)?;
            b.add(&format!("spent:{project_key}"), signed(x))?;
            b.add(&format!("{tok}spent:{token_key}"), signed(x))?;
        }
        l.state = LeaseState::Expired;
        l.expiry_charge = x;
        l.expiry_project_key = project_key;
        l.expiry_token_key = token_key;
        l.purge_at = now.saturating_add(policy.retain_secs);
        reindex_purge(w, &l.id, 0, l.purge_at)?;
        put_lease(w, &l)?;
        stats.expired += 1;
    }
    // Tombstones past the retention.
    let gone: Vec<String> = {
        let t = w.open_table(LEASE_PURGE)?;
        let mut out = Vec::new();
        for entry in t.range::<&str>(..=end.as_str())? {
            let (k, _) = entry?;
            out.push(k.value().to_owned());
        }
        out
    };
    for key in gone {
        w.open_table(LEASE_PURGE)?.remove(key.as_str())?;
        if let Some((_, id)) = key.split_once('|') {
            w.open_table(LEASES)?.remove(id)?;
            stats.purged += 1;
        }
    }
    // Event ids recorded before the retention.
    let cutoff_ms = now.saturating_sub(policy.retain_secs).saturating_mul(1000);
    let old: Vec<String> = {
        let t = w.open_table(USAGE_ID_TIMES)?;
        let end = time_key(cutoff_ms, "");
        let mut out = Vec::new();
        for entry in t.range::<&str>(..end.as_str())? {
            let (k, _) = entry?;
            out.push(k.value().to_owned());
        }
        out
    };
    for key in old {
        w.open_table(USAGE_ID_TIMES)?.remove(key.as_str())?;
        if let Some((_, id_key)) = key.split_once('|') {
            w.open_table(USAGE_IDS)?.remove(id_key)?;
        }
    }
    Ok(stats)
}

/// Removes every lease, counter and usage entry of a project (project deletion).
pub(super) fn forget_project(w: &WriteTransaction, id: &str) -> Result<(), StoreError> {
    let bar = format!("{id}|");
    let bar_end = format!("{id}}}");
    w.open_table(LEDGER)?
        .retain_in::<&str, _>(bar.as_str()..bar_end.as_str(), |_, _| false)?;
    let slash = format!("{id}/");
    let slash_end = format!("{id}0");
    w.open_table(USAGE)?
        .retain_in::<&str, _>(slash.as_str()..slash_end.as_str(), |_, _| false)?;
    w.open_table(USAGE_IDS)?
        .retain_in::<&str, _>(bar.as_str()..bar_end.as_str(), |_, _| false)?;
    w.open_table(USAGE_ID_TIMES)?.retain(|k, _| {
        k.split_once('|')
            .is_none_or(|(_, rest)| !rest.starts_with(&bar))
    })?;
    let mine: Vec<LeaseRecord> = {
        let t = w.open_table(LEASES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            let l: LeaseRecord = decode("lease", v.value())?;
            if l.project_id == id {
                out.push(l);
            }
        }
        out
    };
    for l in mine {
        if l.state == LeaseState::Open {
            reindex_expiry(w, &l.id, Some(l.expires_at), None)?;
        }
        reindex_purge(w, &l.id, l.purge_at, 0)?;
        w.open_table(LEASES)?.remove(l.id.as_str())?;
    }
    Ok(())
}

pub(super) fn budget_usage(
    r: &ReadTransaction,
    project_id: &str,
    token_id: Option<&str>,
    now: Timestamp,
) -> Result<BudgetUsage, StoreError> {
    let Some(project) = get_json::<Project>(&r.open_table(PROJECTS)?, "project", project_id)?
    else {
        return Ok(BudgetUsage::default());
    };
    let (prefix, period) = match token_id {
        None => (String::new(), project.budget.period),
        Some(t) => {
            let Some(tok) = get_json::<TokenRecord>(&r.open_table(TOKENS)?, "token", t)?
                .filter(|tok| tok.project_id == project_id)
            else {
                return Ok(BudgetUsage::default());
            };
            (format!("tok:{t}:"), tok.budget.period)
        }
    };
    let t = r.open_table(LEDGER)?;
    let get = |field: &str| -> Result<u64, StoreError> {
        Ok(t.get(format!("{project_id}|{prefix}{field}").as_str())?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    Ok(BudgetUsage {
        spent: Money(get(&format!("spent:{}", period_key(period, now)))?),
        leased: Money(get("out")?),
        leases: get("n")?,
    })
}

pub(super) fn get_lease(r: &ReadTransaction, id: &str) -> Result<Option<LeaseRecord>, StoreError> {
    get_json(&r.open_table(LEASES)?, "lease", id)
}

pub(super) fn list_usage(
    r: &ReadTransaction,
    filter: &UsageFilter,
    page: &PageRequest,
) -> Result<Page<UsageEvent>, StoreError> {
    let t = r.open_table(USAGE)?;
    let (start, end) = match &filter.project {
        Some(p) => (format!("{p}/"), Some(format!("{p}0"))),
        None => (String::new(), None),
    };
    if let (Some(c), Some(e)) = (&page.cursor, &end)
        && c >= e
    {
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    }
    let lower = match &page.cursor {
        Some(c) if c.as_str() >= start.as_str() => std::ops::Bound::Excluded(c.clone()),
        _ => std::ops::Bound::Included(start),
    };
    let upper = end.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let range = (
        lower.as_ref().map(String::as_str),
        upper.as_ref().map(String::as_str),
    );
    let mut items: Vec<(String, UsageEvent)> = Vec::new();
    let mut scanned = 0usize;
    for entry in t.range::<&str>(range)? {
        let (k, v) = entry?;
        scanned += 1;
        let key = k.value().to_owned();
        let e: UsageEvent = decode("usage event", v.value())?;
        if filter.matches(&e) {
            items.push((key.clone(), e));
            if items.len() > page.limit {
                items.truncate(page.limit);
                let next_cursor = items.last().map(|(k, _)| k.clone());
                return Ok(Page {
                    items: items.into_iter().map(|(_, e)| e).collect(),
                    next_cursor,
                });
            }
        }
        if scanned >= USAGE_SCAN_BUDGET {
            // A rare filter: return what matched and where to resume.
            return Ok(Page {
                items: items.into_iter().map(|(_, e)| e).collect(),
                next_cursor: Some(key),
            });
        }
    }
    Ok(Page {
        items: items.into_iter().map(|(_, e)| e).collect(),
        next_cursor: None,
    })
}
