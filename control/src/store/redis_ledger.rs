//! Budget leases and the usage log of the Redis store (`design.md` §6, §10): one versioned
//! Lua script per operation, every key of a call in the project's hash slot.
//!
//! | key | type | content |
//! |---|---|---|
//! | `iron:{prj_…}:budget` | hash | `spent:<period key>`, `out`, `n`; `tok:<id>:spent:<period key>`, `tok:<id>:out`, `tok:<id>:n` |
//! | `iron:{prj_…}:leases` | hash | lease id → lease JSON (amounts as decimal strings) |
//! | `iron:{prj_…}:leases:open` | zset | open lease ids by `expires_at` |
//! | `iron:{prj_…}:leases:gone` | zset | expired/released lease ids by purge time |
//! | `iron:{prj_…}:usage` | stream | field `e` = usage event JSON |
//! | `iron:{prj_…}:usage:ids` | zset | recorded event ids by time (ms), for de-duplication |
//! | `iron:{g}:leases` | hash | lease id → `"<project id> <token id>"` (finds the slot) |
//!
//! The rules are in the [`super`] module docs; [`LEASE_LIB_V1`] holds them once and is
//! prepended to every lease script. Lua numbers are doubles: every amount stays below
//! [`MAX_GRANT`](crate::model::MAX_GRANT) (and budget limits below 10^15 µ$), so all arithmetic
//! is exact; counters themselves change with `HINCRBY` (integers).

use iron_core::Money;
use iron_core::lease::{Denial, LeaseGrant, LeaseReport, LeaseRequest, ReportAck, UsageEvent};
use redis::Script;

use super::{StoreError, encode};
use crate::model::{LeasePolicy, MAX_GRANT, Timestamp, period_parts};

/// Lease ids examined per project and sweep (the rest wait for the next sweep).
pub(super) const SWEEP_BATCH: usize = 1_000;

/// Shared Lua: period keys, budget remaining, the adaptive grant, and lease state changes.
/// Lease-operation KEYS: project, token hash, budget, leases, open, gone, usage, usage ids;
/// ARGV: now, day, month, lease id, ttl, min lease, retain, then per operation.
pub const LEASE_LIB_V1: &str = r"
local function num(v)
  if not v then return 0 end
  return tonumber(v) or 0
end
local function fmt(v) return string.format('%d', v) end
local function pkey(period, day, month)
  if period == 'daily' then return 'd' .. day end
  if period == 'monthly' then return 'm' .. month end
  return 'total'
end
local function budget_of(rec)
  local b = rec['budget']
  if type(b) ~= 'table' then return nil, 'total' end
  local limit = b['limit']
  if type(limit) ~= 'number' then limit = nil end
  local period = b['period']
  if type(period) ~= 'string' then period = 'total' end
  return limit, period
end
local function incr(h, field, delta)
  if delta == 0 then return end
  local v = redis.call('HINCRBY', h, field, fmt(delta))
  if v <= 0 then redis.call('HDEL', h, field) end
end
local function load_lease(h, id)
  local raw = redis.call('HGET', h, id)
  if not raw then return nil end
  local l = cjson.decode(raw)
  for _, k in ipairs({'g', 's', 'seq', 'exp', 'x', 'ca', 'pa'}) do l[k] = num(l[k]) end
  return l
end
local function save_lease(h, id, l)
  local o = {}
  for k, v in pairs(l) do
    if type(v) == 'number' then o[k] = fmt(v) else o[k] = v end
  end
  redis.call('HSET', h, id, cjson.encode(o))
end
local B = KEYS[3]
local function ctx(tok, fallback_period)
  local pj = redis.call('GET', KEYS[1])
  if not pj then return nil end
  local c = {now = tonumber(ARGV[1]), id = ARGV[4], ttl = tonumber(ARGV[5]),
    minl = tonumber(ARGV[6]), retain = tonumber(ARGV[7]), tp = 'tok:' .. tok .. ':',
    invalid = true, has_token = false, tperiod = fallback_period}
  c.plimit, c.pperiod = budget_of(cjson.decode(pj))
  c.ppk = pkey(c.pperiod, ARGV[2], ARGV[3])
  local tj = redis.call('HGET', KEYS[2], 'json')
  if tj then
    local t = cjson.decode(tj)
    c.has_token = true
    c.tlimit, c.tperiod = budget_of(t)
    c.invalid = redis.call('HEXISTS', KEYS[2], 'revoked_at') == 1
      or type(t['revoked_at']) == 'number' or num(t['expires_at']) <= c.now
  end
  c.tpk = pkey(c.tperiod, ARGV[2], ARGV[3])
  return c
end
local function remaining(prefix, limit, pk)
  if not limit then return nil end
  local r = limit - num(redis.call('HGET', B, prefix .. 'spent:' .. pk))
    - num(redis.call('HGET', B, prefix .. 'out'))
  if r < 0 then r = 0 end
  return r
end
local function min_rem(c)
  local rp = remaining('', c.plimit, c.ppk)
  local rt = remaining(c.tp, c.tlimit, c.tpk)
  if rp and rt then return math.min(rp, rt) end
  return rp or rt or -1
end
local function share(rem, n, minl)
  if n < 0 then n = 0 end
  local s = math.floor(rem / (2 * n + 1))
  if s < minl then s = minl end
  return s
end
local function grant_amount(c, requested, self_open)
  local g = requested
  local rp = remaining('', c.plimit, c.ppk)
  if rp then
    g = math.min(g, share(rp, num(redis.call('HGET', B, 'n')) - self_open, c.minl), rp)
  end
  local rt = remaining(c.tp, c.tlimit, c.tpk)
  if rt then
    g = math.min(g, share(rt, num(redis.call('HGET', B, c.tp .. 'n')) - self_open, c.minl), rt)
  end
  if g < 0 then g = 0 end
  return g
end
local function outstanding(l)
  if l.st == 'open' then return math.max(0, l.g - l.s) end
  return 0
end
local function apply_spent(c, l, new_s)
  local d = new_s - l.s
  if l.st == 'open' then
    local od = math.max(0, l.g - new_s) - math.max(0, l.g - l.s)
    incr(B, 'out', od)
    incr(B, c.tp .. 'out', od)
  end
  incr(B, 'spent:' .. c.ppk, d)
  incr(B, c.tp .. 'spent:' .. c.tpk, d)
  l.s = new_s
end
local function revive(c, l)
  incr(B, 'spent:' .. l.xp, -l.x)
  incr(B, c.tp .. 'spent:' .. l.xt, -l.x)
  incr(B, 'out', l.x)
  incr(B, c.tp .. 'out', l.x)
  incr(B, 'n', 1)
  incr(B, c.tp .. 'n', 1)
  l.st = 'open'
  l.x = 0
  l.xp = ''
  l.xt = ''
  l.pa = 0
  redis.call('ZREM', KEYS[6], c.id)
end
local function close(c, l)
  if l.st == 'open' then
    local o = math.max(0, l.g - l.s)
    incr(B, 'out', -o)
    incr(B, c.tp .. 'out', -o)
    incr(B, 'n', -1)
    incr(B, c.tp .. 'n', -1)
    redis.call('ZREM', KEYS[5], c.id)
  elseif l.st == 'expired' then
    incr(B, 'spent:' .. l.xp, -l.x)
    incr(B, c.tp .. 'spent:' .. l.xt, -l.x)
    l.x = 0
  else
    return
  end
  l.st = 'released'
  l.pa = c.now + c.retain
  redis.call('ZADD', KEYS[6], l.pa, c.id)
end
local function report(release)
  local l = load_lease(KEYS[4], ARGV[4])
  if not l then return {-1, 0, 0, 0} end
  local c = ctx(l.tok, l.tp)
  if not c then return {-1, 0, 0, 0} end
  local seq = tonumber(ARGV[8])
  local changed = false
  if seq > l.seq then
    if l.st == 'expired' and not release then revive(c, l) end
    apply_spent(c, l, tonumber(ARGV[9]))
    l.seq = seq
    if l.st == 'open' then
      l.exp = c.now + c.ttl
      redis.call('ZADD', KEYS[5], l.exp, c.id)
    end
    local n = tonumber(ARGV[11])
    for i = 12, 11 + 2 * n, 2 do
      if redis.call('ZADD', KEYS[8], 'NX', ARGV[10], ARGV[i]) == 1 then
        redis.call('XADD', KEYS[7], '*', 'e', ARGV[i + 1])
      end
    end
    changed = true
  end
  if release and l.st ~= 'released' then
    close(c, l)
    changed = true
  end
  if changed then save_lease(KEYS[4], c.id, l) end
  local rev = 0
  if c.invalid then rev = 1 end
  return {1, outstanding(l), min_rem(c), rev}
end
";

/// ARGV 8..: token id, proxy id, requested. Returns {ok, granted, expires_at, remaining
/// (-1 = unlimited), denial}.
pub const GRANT_LEASE_V1: &str = r"
local c = ctx(ARGV[8], 'total')
if not c or not c.has_token then return {0, 0, 0, 0, 'unknown_token'} end
if c.invalid then return {0, 0, 0, min_rem(c), 'token_revoked'} end
local g = grant_amount(c, tonumber(ARGV[10]), 0)
if g <= 0 then return {0, 0, 0, min_rem(c), 'budget_exceeded'} end
local exp = c.now + c.ttl
save_lease(KEYS[4], c.id, {tok = ARGV[8], prx = ARGV[9], g = g, s = 0, seq = 0, exp = exp,
  st = 'open', tp = c.tperiod, x = 0, xp = '', xt = '', ca = c.now, pa = 0})
redis.call('ZADD', KEYS[5], exp, c.id)
incr(B, 'out', g)
incr(B, c.tp .. 'out', g)
incr(B, 'n', 1)
incr(B, c.tp .. 'n', 1)
return {1, g, exp, min_rem(c), ''}
";

/// ARGV 8: requested. Returns like the grant; ok = -1 for an unknown or released lease.
pub const EXTEND_LEASE_V1: &str = r"
local l = load_lease(KEYS[4], ARGV[4])
if not l or l.st == 'released' then return {-1, 0, 0, 0, ''} end
local c = ctx(l.tok, l.tp)
if not c then return {-1, 0, 0, 0, ''} end
if c.invalid then return {0, 0, l.exp, min_rem(c), 'token_revoked'} end
if l.st == 'expired' then revive(c, l) end
if l.s > l.g then l.g = l.s end
local g = grant_amount(c, tonumber(ARGV[8]), 1)
incr(B, 'out', g)
incr(B, c.tp .. 'out', g)
l.g = l.g + g
l.exp = c.now + c.ttl
redis.call('ZADD', KEYS[5], l.exp, c.id)
save_lease(KEYS[4], c.id, l)
if g <= 0 then return {0, 0, l.exp, min_rem(c), 'budget_exceeded'} end
return {1, g, l.exp, min_rem(c), ''}
";

/// ARGV 8..: seq, spent, now (ms), n, then n × (event id, event JSON). Returns {ok (-1 =
/// unknown lease), lease remaining, budget remaining (-1 = unlimited), revoked}.
pub const REPORT_LEASE_V1: &str = "return report(false)";

/// Like [`REPORT_LEASE_V1`], then the lease is returned.
pub const RELEASE_LEASE_V1: &str = "return report(true)";

/// KEYS: project, budget, leases, open, gone, usage ids; ARGV: now, day, month, retain,
/// batch, event-id cutoff (ms). Returns {expired, {purged lease ids…}}.
pub const EXPIRE_LEASES_V1: &str = r"
local now = tonumber(ARGV[1])
local pperiod = 'total'
local pj = redis.call('GET', KEYS[1])
if pj then
  local _
  _, pperiod = budget_of(cjson.decode(pj))
end
local ppk = pkey(pperiod, ARGV[2], ARGV[3])
local H = KEYS[2]
local expired = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[4], id)
  local l = load_lease(KEYS[3], id)
  if l and l.st == 'open' then
    local tp = 'tok:' .. l.tok .. ':'
    local tpk = pkey(l.tp, ARGV[2], ARGV[3])
    local x = math.max(0, l.g - l.s)
    incr(H, 'out', -x)
    incr(H, tp .. 'out', -x)
    incr(H, 'n', -1)
    incr(H, tp .. 'n', -1)
    incr(H, 'spent:' .. ppk, x)
    incr(H, tp .. 'spent:' .. tpk, x)
    l.st = 'expired'
    l.x = x
    l.xp = ppk
    l.xt = tpk
    l.pa = now + tonumber(ARGV[4])
    save_lease(KEYS[3], id, l)
    redis.call('ZADD', KEYS[5], l.pa, id)
    expired = expired + 1
  end
end
local purged = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(purged) do
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[5], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[6])
return {expired, purged}
";

/// Which lease script a [`Call`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseScript {
    Grant,
    Extend,
    Report,
    Release,
    Expire,
}

impl LeaseScript {
    /// The script's versioned name (logs, tests).
    pub const fn name(self) -> &'static str {
        match self {
            LeaseScript::Grant => "GRANT_LEASE_V1",
            LeaseScript::Extend => "EXTEND_LEASE_V1",
            LeaseScript::Report => "REPORT_LEASE_V1",
            LeaseScript::Release => "RELEASE_LEASE_V1",
            LeaseScript::Expire => "EXPIRE_LEASES_V1",
        }
    }
}

/// The lease scripts, each with the library prepended (hashed once).
pub(super) struct LeaseScripts {
    grant: Script,
    extend: Script,
    report: Script,
    release: Script,
    expire: Script,
}

impl LeaseScripts {
    pub(super) fn new() -> Self {
        let with_lib = |body: &str| Script::new(&format!("{LEASE_LIB_V1}\n{body}"));
        LeaseScripts {
            grant: with_lib(GRANT_LEASE_V1),
            extend: with_lib(EXTEND_LEASE_V1),
            report: with_lib(REPORT_LEASE_V1),
            release: with_lib(RELEASE_LEASE_V1),
            expire: with_lib(EXPIRE_LEASES_V1),
        }
    }

    pub(super) fn get(&self, which: LeaseScript) -> &Script {
        match which {
            LeaseScript::Grant => &self.grant,
            LeaseScript::Extend => &self.extend,
            LeaseScript::Report => &self.report,
            LeaseScript::Release => &self.release,
            LeaseScript::Expire => &self.expire,
        }
    }
}

/// One script call: what is sent to Redis (built separately so tests can check it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub script: LeaseScript,
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

fn pk(project_id: &str, name: &str) -> String {
    format!("iron:{{{project_id}}}:{name}")
}

/// Keys of a lease operation in `project_id`'s slot (order = the scripts' KEYS).
pub fn lease_keys(project_id: &str, token_id: &str) -> Vec<String> {
    vec![
        pk(project_id, "project"),
        pk(project_id, &format!("token:{token_id}")),
        pk(project_id, "budget"),
        pk(project_id, "leases"),
        pk(project_id, "leases:open"),
        pk(project_id, "leases:gone"),
        pk(project_id, "usage"),
        pk(project_id, "usage:ids"),
    ]
}

/// Every lease/usage key of a project (deletion).
pub(super) fn project_lease_keys(project_id: &str) -> Vec<String> {
    ["leases", "leases:open", "leases:gone", "usage", "usage:ids"]
        .iter()
        .map(|n| pk(project_id, n))
        .collect()
}

fn common_args(lease_id: &str, now: Timestamp, policy: &LeasePolicy) -> Vec<String> {
    let (day, month) = period_parts(now);
    vec![
        now.to_string(),
        day,
        month,
        lease_id.to_owned(),
        policy.ttl_secs.to_string(),
        policy.min_lease.micros().to_string(),
        policy.retain_secs.to_string(),
    ]
}

pub fn grant_call(
    project_id: &str,
    req: &LeaseRequest,
    lease_id: &str,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Call {
    let mut args = common_args(lease_id, now, policy);
    args.push(req.token_id.clone());
    args.push(req.proxy_id.clone());
    args.push(req.requested.min(MAX_GRANT).micros().to_string());
    Call {
        script: LeaseScript::Grant,
        keys: lease_keys(project_id, &req.token_id),
        args,
    }
}

pub fn extend_call(
    project_id: &str,
    token_id: &str,
    lease_id: &str,
    requested: Money,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Call {
    let mut args = common_args(lease_id, now, policy);
    args.push(requested.min(MAX_GRANT).micros().to_string());
    Call {
        script: LeaseScript::Extend,
        keys: lease_keys(project_id, token_id),
        args,
    }
}

/// A report (or, with `release`, the final report). Events are stored with the lease's
/// project and token.
#[allow(clippy::too_many_arguments)]
pub fn report_call(
    project_id: &str,
    token_id: &str,
    lease_id: &str,
    report: &LeaseReport,
    release: bool,
    now: Timestamp,
    policy: &LeasePolicy,
) -> Result<Call, StoreError> {
    let mut args = common_args(lease_id, now, policy);
    args.push(report.seq.to_string());
    args.push(report.spent.min(MAX_GRANT).micros().to_string());
    args.push(now.saturating_mul(1000).to_string());
    args.push(report.events.len().to_string());
    for e in &report.events {
        let mut e: UsageEvent = e.clone();
        project_id.clone_into(&mut e.project_id);
        token_id.clone_into(&mut e.token_id);
        args.push(e.id.clone());
        args.push(
            String::from_utf8(encode(&e)?)
                .map_err(|_| StoreError::Backend("non-UTF-8 JSON".into()))?,
        );
    }
    Ok(Call {
        script: if release {
            LeaseScript::Release
        } else {
            LeaseScript::Report
        },
        keys: lease_keys(project_id, token_id),
        args,
    })
}

pub fn expire_call(project_id: &str, now: Timestamp, policy: &LeasePolicy) -> Call {
    let (day, month) = period_parts(now);
    let cutoff_ms = now.saturating_sub(policy.retain_secs).saturating_mul(1000);
    Call {
        script: LeaseScript::Expire,
        keys: vec![
            pk(project_id, "project"),
            pk(project_id, "budget"),
            pk(project_id, "leases"),
            pk(project_id, "leases:open"),
            pk(project_id, "leases:gone"),
            pk(project_id, "usage:ids"),
        ],
        args: vec![
            now.to_string(),
            day,
            month,
            policy.retain_secs.to_string(),
            SWEEP_BATCH.to_string(),
            cutoff_ms.to_string(),
        ],
    }
}

/// Amounts returned by Lua: -1 = unlimited.
fn money_or_unlimited(v: i64) -> Money {
    u64::try_from(v).map_or(Money(u64::MAX), Money)
}

fn money(v: i64) -> Money {
    Money(u64::try_from(v).unwrap_or(0))
}

/// Decodes a grant/extend reply `{ok, granted, expires_at, remaining, denial}`; `None` when
/// the lease is unknown. A denied grant creates no lease (empty `lease_id`); a denied
/// extension keeps its lease.
pub(super) fn grant_reply(
    lease_id: &str,
    extension: bool,
    reply: (i64, i64, i64, i64, String),
) -> Result<Option<LeaseGrant>, StoreError> {
    let (ok, granted, expires_at, remaining, denial) = reply;
    if ok < 0 {
        return Ok(None);
    }
    let denied = match denial.as_str() {
        "" => None,
        "budget_exceeded" => Some(Denial::BudgetExceeded),
        "token_revoked" => Some(Denial::TokenRevoked),
        "unknown_token" => Some(Denial::UnknownToken),
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected lease denial `{other}`"
            )));
        }
    };
    Ok(Some(LeaseGrant {
        lease_id: if ok == 1 || extension {
            lease_id.to_owned()
        } else {
            String::new()
        },
        granted: money(granted),
        expires_at: u64::try_from(expires_at).unwrap_or(0),
        budget_remaining: if denied == Some(Denial::UnknownToken) {
            Money::ZERO
        } else {
            money_or_unlimited(remaining)
        },
        denied,
    }))
}

/// Decodes a report reply `{ok, lease remaining, budget remaining, revoked}`.
pub(super) fn ack_reply(reply: (i64, i64, i64, i64)) -> Option<ReportAck> {
    let (ok, lease_remaining, budget_remaining, revoked) = reply;
    (ok >= 0).then(|| ReportAck {
        lease_remaining: money(lease_remaining),
        budget_remaining: money_or_unlimited(budget_remaining),
        revoked: revoked == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LeasePolicy {
        LeasePolicy {
            ttl_secs: 60,
            min_lease: Money(100),
            retain_secs: 3600,
        }
    }

    /// 2026-11-28T12:00:00Z
    const NOW: u64 = 1_795_867_200;

    #[test]
    fn grant_sends_one_slot_and_the_documented_arguments() {
        let req = LeaseRequest {
            proxy_id: "px_1".into(),
            token_id: "tok_T".into(),
            requested: Money(500_000),
        };
        let call = grant_call("prj_P", &req, "lse_L", NOW, &policy());
        assert_eq!(call.script.name(), "GRANT_LEASE_V1");
        assert_eq!(
            call.keys,
            [
                "iron:{prj_P}:project",
                "iron:{prj_P}:token:tok_T",
                "iron:{prj_P}:budget",
                "iron:{prj_P}:leases",
                "iron:{prj_P}:leases:open",
                "iron:{prj_P}:leases:gone",
                "iron:{prj_P}:usage",
                "iron:{prj_P}:usage:ids",
            ]
        );
        assert_eq!(
            call.args,
            [
                "1795867200",
                "2026-11-28",
                "2026-11",
                "lse_L",
                "60",
                "100",
                "3600",
                "tok_T",
                "px_1",
                "500000"
            ]
        );
    }

    #[test]
    fn every_call_stays_in_the_project_slot() {
        let report = LeaseReport {
            seq: 3,
            spent: Money(42),
            events: vec![UsageEvent {
                id: "evt_1".into(),
                token_id: "tok_OTHER".into(),
                project_id: "prj_OTHER".into(),
                provider_id: "prv_1".into(),
                model: "gpt-4o-mini".into(),
                input_tokens: 1,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
                output_tokens: 2,
                cost: Money(42),
                status: 200,
                cut_off: false,
                at_ms: 5,
                overhead_us: Some(120),
            }],
        };
        let calls = [
            extend_call("prj_P", "tok_T", "lse_L", Money(7), NOW, &policy()),
            report_call("prj_P", "tok_T", "lse_L", &report, false, NOW, &policy()).unwrap(),
            report_call("prj_P", "tok_T", "lse_L", &report, true, NOW, &policy()).unwrap(),
            expire_call("prj_P", NOW, &policy()),
        ];
        for c in &calls {
            assert!(
                c.keys.iter().all(|k| k.starts_with("iron:{prj_P}:")),
                "{c:?}"
            );
        }
        assert_eq!(calls[1].script.name(), "REPORT_LEASE_V1");
        assert_eq!(calls[2].script.name(), "RELEASE_LEASE_V1");
        assert_eq!(calls[3].script.name(), "EXPIRE_LEASES_V1");
        // seq, spent, now (ms), 1 event: its id, then its JSON with the lease's project/token.
        let r = &calls[1].args[7..];
        assert_eq!(&r[..5], ["3", "42", "1795867200000", "1", "evt_1"]);
        let stored: UsageEvent = serde_json::from_str(&r[5]).unwrap();
        assert_eq!(
            (stored.project_id.as_str(), stored.token_id.as_str()),
            ("prj_P", "tok_T")
        );
        assert_eq!(
            calls[3].args,
            [
                "1795867200",
                "2026-11-28",
                "2026-11",
                "3600",
                "1000",
                "1795863600000"
            ]
        );
    }

    #[test]
    fn replies_decode() {
        let g = grant_reply("lse_L", false, (1, 10, 99, -1, String::new()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (g.granted, g.budget_remaining, g.denied),
            (Money(10), Money(u64::MAX), None)
        );
        let d = grant_reply("lse_L", false, (0, 0, 0, 5, "budget_exceeded".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.lease_id.as_str(), d.denied),
            ("", Some(Denial::BudgetExceeded))
        );
        assert!(
            grant_reply("lse_L", true, (-1, 0, 0, 0, String::new()))
                .unwrap()
                .is_none()
        );
        assert!(ack_reply((-1, 0, 0, 0)).is_none());
        assert_eq!(
            ack_reply((1, 3, 4, 1)),
            Some(ReportAck {
                lease_remaining: Money(3),
                budget_remaining: Money(4),
                revoked: true
            })
        );
    }
}
