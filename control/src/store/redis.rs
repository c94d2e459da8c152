//! Redis store (`design.md` §10): production backend shared by stateless control replicas.
//!
//! Key layout — every key is hash-tagged so each multi-key step touches one cluster slot:
//!
//! | key | type | content |
//! |---|---|---|
//! | `iron:{prj_…}:project` | string | project JSON |
//! | `iron:{prj_…}:tokens` | zset (lex) | token ids of the project |
//! | `iron:{prj_…}:token:{tok_…}` | hash | `json` (metadata), `revoked_at` |
//! | `iron:{prj_…}:budget`, `leases…`, `usage…` | | budget counters, leases, usage log: see [`super::redis_ledger`] |
//! | `iron:{g}:projects` / `project_names` | zset / hash | project ids; name → id |
//! | `iron:{g}:tokens` / `token_project` | zset / hash | token ids; token → project |
//! | `iron:{g}:revoked` | zset | revoked token id, score = expiry |
//! | `iron:{g}:providers` / `provider_names` | hash / hash | id → JSON; name → id |
//! | `iron:{g}:apikeys` / `apikey_hashes` | hash / hash | id → JSON; sha256 → id |
//! | `iron:{g}:signing_keys`, `meta`, `prices` | hash | kid / key / model → value |
//! | `iron:{g}:audit` | stream | `json` field, capped (~100k) |
//! | `iron:{g}:session_revoked:<jti>` | string | revoked dashboard session, expires with it |
//! | `iron:{g}:events` / `event_seq` | zset / string | `"<id>\n<time>\n<json>"` by id; counter |
//! | `iron:{g}:leases` | hash | lease id → `"<project id> <token id>"` |
//!
//! Multi-key changes inside one slot run as Lua scripts (EVALSHA, loaded on first use; the
//! `_V1` suffix is the script version). Changes that span the global slot and a project slot
//! are ordered so a crash between the two steps leaves nothing visible and nothing unsafe:
//! records are written before they are indexed, revocations enter the global revocation set
//! before the token record is marked.
//!
//! Connection ([`Conn`]): `redis://` / `rediss://` is one endpoint behind a
//! [`ConnectionManager`], which reconnects after failures; `redis+cluster://h1:p,h2:p,…` /
//! `rediss+cluster://…` is a Redis Cluster behind the async cluster client
//! ([`ClusterConnection`]), which routes every command and script by its first key's slot,
//! follows `MOVED`/`ASK`, reloads a script on a node that answers `NOSCRIPT` (`SCRIPT LOAD`
//! goes to every master) and reconnects. Commands fail fast (`Unavailable`) while Redis is
//! down. A pipeline must stay in one slot on a cluster (the client refuses cross-slot
//! pipelines), so reads that span projects go through [`RedisStore::each`]: one pipeline on a
//! single endpoint, one command per key on a cluster (concurrently). The only `MULTI`
//! pipelines touch `{g}` keys alone. Nothing lists keys with `SCAN`/`KEYS`: every listing
//! reads an index (`projects`, `tokens`, …), so it sees every master's data.

use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use iron_core::Money;
use iron_core::lease::{LeaseGrant, LeaseReport, LeaseRequest, ReportAck, UsageEvent};
use iron_core::wire::ControlEvent;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Script};

use super::redis_ledger::{self as ledger, Call, LeaseScripts};
use super::{Revocation, Store, StoreError, decode, encode};
use crate::model::{
    ApiKeyRecord, AuditEvent, AuditFilter, BudgetUsage, EventBatch, LeasePolicy, LeaseRecord,
    LeaseState, Page, PageRequest, Period, PriceOverride, Project, Provider, SigningKeyRecord,
    StoredEvent, SweepStats, Timestamp, TokenRecord, USAGE_SCAN_BUDGET, UsageFilter, period_key,
};

/// Entries kept in the audit stream (approximate trim).
const AUDIT_MAXLEN: usize = 100_000;
/// How far before `since` a time-filtered usage scan starts (proxy/Redis clock skew).
const USAGE_CLOCK_SLACK_MS: u64 = 10 * 60_000;
/// Audit entries examined per listing call when a filter matches rarely.
const AUDIT_SCAN_BUDGET: usize = 10_000;
/// Commands in flight at once when a cross-slot read is split per key (cluster).
const CLUSTER_FANOUT: usize = 32;
/// URL schemes of a Redis Cluster (`redis+cluster://h1:6379,h2:6379`).
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// The seed node URLs of a cluster URL: `redis+cluster://[user:pass@]h1:p1,h2:p2[/?query]`
/// → `redis://[user:pass@]h1:p1[/?query]`, … (`rediss+cluster://` → `rediss://`). `None` when
/// `url` is not a cluster URL; `Some(Err)` names what is wrong (never the password). The
/// credentials and the query apply to every node; the database must be 0 (Redis Cluster
/// has only one).
pub fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (rest, scheme) = CLUSTER_SCHEMES
        .iter()
        .find_map(|(from, to)| url.strip_prefix(from).map(|rest| (rest, *to)))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    if !matches!(tail.split('?').next(), Some("" | "/" | "/0")) {
        return Some(Err(
            "a cluster URL takes no database (Redis Cluster has only database 0)".into(),
        ));
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let host = host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Some(Err(
                "expected a comma-separated list of host:port after the scheme".into(),
            ));
        }
        nodes.push(format!("{scheme}{userinfo}{host}{tail}"));
    }
    Some(Ok(nodes))
}

/// The connection of a [`RedisStore`]: one endpoint or a cluster. Cheap to clone (both
/// variants are handles to a shared multiplexed connection).
#[derive(Clone)]
pub enum Conn {
    /// `redis://` / `rediss://`: reconnects after failures.
    Single(ConnectionManager),
    /// `redis+cluster://`: routes by slot, follows redirections, reconnects.
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn g(name: &str) -> String {
    format!("iron:{{g}}:{name}")
}

fn p(project_id: &str, name: &str) -> String {
    format!("iron:{{{project_id}}}:{name}")
}

fn token_key(project_id: &str, token_id: &str) -> String {
    format!("iron:{{{project_id}}}:token:{token_id}")
}

/// Claims a unique index value for a new record (one slot). KEYS: index, records;
/// ARGV: id, index value, json. Returns 1, 0 (value taken) or -1 (id exists).
const CREATE_INDEXED_V1: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
";

/// Replaces (`ARGV[5]` = 'update': must exist) or upserts ('put') an indexed record, moving
/// its index entry when the indexed field (`ARGV[4]`) changed. KEYS: index, records;
/// ARGV: id, index value, json, field, mode. Returns 1, 0 (value taken) or -1 (missing).
const PUT_INDEXED_V1: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[2])
if owner and owner ~= ARGV[1] then return 0 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur and ARGV[5] == 'update' then return -1 end
if cur then
  local old = cjson.decode(cur)[ARGV[4]]
  if old ~= ARGV[2] and redis.call('HGET', KEYS[1], old) == ARGV[1] then
    redis.call('HDEL', KEYS[1], old)
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
";

/// Deletes an indexed record. KEYS: index, records; ARGV: id, field. Returns 1 or 0.
const DELETE_INDEXED_V1: &str = r"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return 0 end
local v = cjson.decode(cur)[ARGV[2]]
if redis.call('HGET', KEYS[1], v) == ARGV[1] then redis.call('HDEL', KEYS[1], v) end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
";

/// Indexes a project whose record exists. KEYS: project_names, projects; ARGV: name, id.
const INDEX_PROJECT_V1: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
";

/// Removes `ARGV[1]` from hash `KEYS[1]` if it still maps to `ARGV[2]`.
const HDEL_IF_V1: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Deletes a project's keys (its slot). KEYS: project, tokens, budget, token hashes…;
/// ARGV: expected token count. Returns -1 (missing), -2 (tokens changed: retry) or the
/// deleted tokens as [json, revoked_at, …].
const DELETE_PROJECT_V1: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[1]) then return -2 end
local out = {}
for i = 4, #KEYS do
  local j = redis.call('HGET', KEYS[i], 'json')
  if j then
    table.insert(out, j)
    table.insert(out, redis.call('HGET', KEYS[i], 'revoked_at') or '')
  end
end
redis.call('DEL', unpack(KEYS))
return out
";

/// Drops a deleted project from the global indexes and revokes its live tokens.
/// KEYS: project_names, projects, tokens, token_project, revoked;
/// ARGV: name, id, n, n token ids…, then (token id, expiry) pairs to revoke.
const FORGET_PROJECT_V1: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
end
for i = 4 + n, #ARGV, 2 do
  redis.call('ZADD', KEYS[5], 'NX', ARGV[i + 1], ARGV[i])
end
return 1
";

/// Stores a token in its project's slot. KEYS: project, tokens, token hash; ARGV: id, json.
/// Returns 1, 0 (no such project) or -1 (id exists).
const CREATE_TOKEN_V1: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('HSET', KEYS[3], 'json', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
";

/// Marks a token revoked. KEYS: token hash; ARGV: now. Returns -1 (missing), 1 (newly), 0.
const REVOKE_TOKEN_V1: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
";

/// Appends to the event log and trims it. KEYS: event_seq, events; ARGV: time, json, retain.
const APPEND_EVENT_V1: &str = r"
local id = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], id, string.format('%d\n%s\n%s', id, ARGV[1], ARGV[2]))
local n = redis.call('ZCARD', KEYS[2])
local retain = tonumber(ARGV[3])
if n > retain then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - retain - 1) end
return id
";

/// Reads the log after a position. KEYS: event_seq, events; ARGV: after, limit.
/// Returns [last id, first retained id (0 = none), [members…]].
const EVENTS_SINCE_V1: &str = r"
local last = redis.call('GET', KEYS[1]) or '0'
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local min = '0'
if #first > 0 then min = first[2] end
local items = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
return {last, min, items}
";

/// The loaded scripts (hashed once).
struct Scripts {
    create_indexed: Script,
    put_indexed: Script,
    delete_indexed: Script,
    index_project: Script,
    hdel_if: Script,
    delete_project: Script,
    forget_project: Script,
    create_token: Script,
    revoke_token: Script,
    append_event: Script,
    events_since: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            create_indexed: Script::new(CREATE_INDEXED_V1),
            put_indexed: Script::new(PUT_INDEXED_V1),
            delete_indexed: Script::new(DELETE_INDEXED_V1),
            index_project: Script::new(INDEX_PROJECT_V1),
            hdel_if: Script::new(HDEL_IF_V1),
            delete_project: Script::new(DELETE_PROJECT_V1),
            forget_project: Script::new(FORGET_PROJECT_V1),
            create_token: Script::new(CREATE_TOKEN_V1),
            revoke_token: Script::new(REVOKE_TOKEN_V1),
            append_event: Script::new(APPEND_EVENT_V1),
            events_since: Script::new(EVENTS_SINCE_V1),
        }
    }
}

/// The Redis-backed store.
pub struct RedisStore {
    conn: Conn,
    scripts: Scripts,
    lease_scripts: LeaseScripts,
    retain_events: usize,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_cluster_error()
            || matches!(
                e.kind(),
                redis::ErrorKind::ClusterConnectionNotFound
                    | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
            )
        {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Backend("non-UTF-8 JSON".into()))
}

fn parse_event(member: &str) -> Result<StoredEvent, StoreError> {
    let mut parts = member.splitn(3, '\n');
    let (Some(id), Some(time), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::Corrupt("event log entry".into()));
    };
    let id = id
        .parse()
        .map_err(|_| StoreError::Corrupt("event id".into()))?;
    let time = time
        .parse()
        .map_err(|_| StoreError::Corrupt("event time".into()))?;
    Ok(StoredEvent {
        id,
        time,
        event: decode("event", json.as_bytes())?,
    })
}

/// `PING` on every master of the cluster, each by its address: a plain fan-out `PING`
/// skips nodes the client has lost, and a command routed by slot falls back to another
/// node, so neither would notice a master that is down. The masters come from
/// `CLUSTER SLOTS` (asked of any node).
async fn ping_every_master(conn: &ClusterConnection) -> Result<(), StoreError> {
    use redis::Value;
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let mut c = conn.clone();
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await?;
    let Value::Array(ranges) = slots else {
        return Err(StoreError::Backend("unexpected CLUSTER SLOTS reply".into()));
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else {
            continue;
        };
        let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
            (master.first(), master.get(1))
        else {
            continue;
        };
        let host = String::from_utf8_lossy(host).into_owned();
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        // "" / "?" (endpoint unknown to that node): the client cannot address it either.
        if !host.is_empty() && host != "?" && !masters.contains(&(host.clone(), port)) {
            masters.push((host, port));
        }
    }
    if masters.is_empty() {
        return Err(StoreError::Unavailable(
            "Redis Cluster serves no slots".into(),
        ));
    }
    for (host, port) in masters {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        c.route_command(redis::cmd("PING"), routing).await?;
    }
    Ok(())
}

/// Sorts decoded records by `key` and pages them in memory (small global collections).
fn page_in_memory<T>(
    mut items: Vec<T>,
    page: &PageRequest,
    key: impl Fn(&T) -> String + Copy,
) -> Page<T> {
    items.sort_by_key(key);
    if let Some(c) = &page.cursor {
        items.retain(|i| key(i).as_str() > c.as_str());
    }
    items.truncate(page.limit.saturating_add(1));
    Page::from_sorted(items, page.limit, key)
}

impl RedisStore {
    /// Connects to `url`: `redis://…` / `rediss://…` (one endpoint) or
    /// `redis+cluster://h1:p1,h2:p2,…` / `rediss+cluster://…` (a Redis Cluster, any reachable
    /// seed node is enough; the client discovers the others).
    pub async fn connect(url: &str, retain_events: usize) -> Result<Self, StoreError> {
        let conn = match cluster_nodes(url) {
            Some(nodes) => {
                let nodes = nodes
                    .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(Duration::from_secs(3))
                    .response_timeout(Duration::from_secs(5))
                    .retries(2)
                    .max_retry_wait(500)
                    .build()
                    .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("Redis Cluster: {e}")))?;
                Conn::Cluster(conn)
            }
            None => {
                let client = redis::Client::open(url)
                    .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(3)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(ConnectionManager::new_with_config(client, config).await?)
            }
        };
        Ok(RedisStore {
            conn,
            scripts: Scripts::new(),
            lease_scripts: LeaseScripts::new(),
            retain_events: retain_events.max(1),
        })
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs independent commands whose keys may sit in different slots, answers in order:
    /// one pipeline on a single endpoint; on a cluster (where a pipeline must stay in one
    /// slot) each command goes to its own slot's master, [`CLUSTER_FANOUT`] at a time.
    async fn each<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmds: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match &self.conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                Ok(pipe.query_async(&mut c.clone()).await?)
            }
            Conn::Cluster(c) => Ok(futures::stream::iter(cmds)
                .map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<T>(&mut c).await }
                })
                .buffered(CLUSTER_FANOUT)
                .try_collect()
                .await?),
        }
    }

    async fn hash_records<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let all: Vec<(String, Vec<u8>)> = self.conn().hgetall(key).await?;
        all.iter().map(|(_, v)| decode(what, v)).collect()
    }

    async fn hash_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        field: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let v: Option<Vec<u8>> = self.conn().hget(key, field).await?;
        v.map(|v| decode(what, &v)).transpose()
    }

    async fn by_index<T: serde::de::DeserializeOwned>(
        &self,
        index: &str,
        records: &str,
        value: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let id: Option<String> = self.conn().hget(index, value).await?;
        match id {
            Some(id) => self.hash_record(records, &id, what).await,
            None => Ok(None),
        }
    }

    /// Loads token records by id, skipping ids whose record vanished.
    async fn load_tokens(
        &self,
        pairs: &[(String, String)],
    ) -> Result<Vec<TokenRecord>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = pairs
            .iter()
            .map(|(prj, tok)| {
                let mut c = redis::cmd("HMGET");
                c.arg(token_key(prj, tok)).arg("json").arg("revoked_at");
                c
            })
            .collect();
        let rows: Vec<(Option<Vec<u8>>, Option<u64>)> = self.each(cmds).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (json, revoked_at) in rows {
            if let Some(json) = json {
                let mut t: TokenRecord = decode("token", &json)?;
                if revoked_at.is_some() {
                    t.revoked_at = revoked_at;
                }
                out.push(t);
            }
        }
        Ok(out)
    }

    fn lex_after(cursor: &Option<String>) -> String {
        match cursor {
            Some(c) => format!("({c}"),
            None => "-".into(),
        }
    }

    /// Runs a lease script call.
    async fn run<T: redis::FromRedisValue>(&self, call: &Call) -> Result<T, StoreError> {
        let mut inv = self.lease_scripts.get(call.script).prepare_invoke();
        for k in &call.keys {
            inv.key(k);
        }
        for a in &call.args {
            inv.arg(a);
        }
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    /// `(project id, token id)` of a lease, from the global index.
    async fn lease_home(&self, lease_id: &str) -> Result<Option<(String, String)>, StoreError> {
        let v: Option<String> = self.conn().hget(g("leases"), lease_id).await?;
        Ok(v.and_then(|v| v.split_once(' ').map(|(p, t)| (p.to_owned(), t.to_owned()))))
    }

    async fn report_or_release(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        release: bool,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError> {
        let (prj, tok) = self
            .lease_home(lease_id)
            .await?
            .ok_or_else(|| StoreError::not_found("lease", lease_id))?;
        let call = ledger::report_call(&prj, &tok, lease_id, report, release, now, policy)?;
        let reply: (i64, i64, i64, i64) = self.run(&call).await?;
        ledger::ack_reply(reply).ok_or_else(|| StoreError::not_found("lease", lease_id))
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_indexed(
        &self,
        index: &str,
        records: &str,
        id: &str,
        value: &str,
        json: &[u8],
        field: &str,
        mode: &str,
    ) -> Result<i64, StoreError> {
        Ok(self
            .scripts
            .put_indexed
            .key(index)
            .key(records)
            .arg(id)
            .arg(value)
            .arg(json)
            .arg(field)
            .arg(mode)
            .invoke_async(&mut self.conn())
            .await?)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match &self.conn {
            Conn::Single(c) => {
                let _: String = redis::cmd("PING").query_async(&mut c.clone()).await?;
            }
            Conn::Cluster(c) => ping_every_master(c).await?,
        }
        Ok(())
    }

    async fn create_project(&self, project: &Project) -> Result<(), StoreError> {
        let key = p(&project.id, "project");
        let json = encode(project)?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&json)
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        if set.is_none() {
            return Err(StoreError::conflict("project", &project.id));
        }
        let claimed: i64 = self
            .scripts
            .index_project
            .key(g("project_names"))
            .key(g("projects"))
            .arg(&project.name)
            .arg(&project.id)
            .invoke_async(&mut self.conn())
            .await?;
        if claimed == 0 {
            let _: i64 = self.conn().del(&key).await?;
            return Err(StoreError::conflict("project", &project.name));
        }
        Ok(())
    }

    async fn get_project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        let v: Option<Vec<u8>> = self.conn().get(p(id, "project")).await?;
        v.map(|v| decode("project", &v)).transpose()
    }

    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        let id: Option<String> = self.conn().hget(g("project_names"), name).await?;
        match id {
            Some(id) => self.get_project(&id).await,
            None => Ok(None),
        }
    }

    async fn list_projects(&self, page: &PageRequest) -> Result<Page<Project>, StoreError> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(g("projects"))
            .arg(Self::lex_after(&page.cursor))
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(page.limit.saturating_add(1))
            .query_async(&mut self.conn())
            .await?;
        let mut items = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let cmds = ids
                .iter()
                .map(|id| {
                    let mut c = redis::cmd("GET");
                    c.arg(p(id, "project"));
                    c
                })
                .collect();
            let rows: Vec<Option<Vec<u8>>> = self.each(cmds).await?;
            for row in rows.into_iter().flatten() {
                items.push(decode::<Project>("project", &row)?);
            }
        }
        Ok(Page::from_sorted(items, page.limit, |p: &Project| {
            p.id.clone()
        }))
    }

    async fn update_project(&self, project: &Project) -> Result<(), StoreError> {
        let old = self
            .get_project(&project.id)
            .await?
            .ok_or_else(|| StoreError::not_found("project", &project.id))?;
        let renamed = old.name != project.name;
        if renamed {
            let claimed: bool = self
                .conn()
                .hset_nx(g("project_names"), &project.name, &project.id)
                .await?;
            if !claimed {
                return Err(StoreError::conflict("project", &project.name));
            }
        }
        let set: Option<String> = redis::cmd("SET")
            .arg(p(&project.id, "project"))
            .arg(encode(project)?)
            .arg("XX")
            .query_async(&mut self.conn())
            .await?;
        let (release, status) = match set {
            Some(_) => (&old.name, Ok(())),
            None => (
                &project.name,
                Err(StoreError::not_found("project", &project.id)),
            ),
        };
        if renamed {
            let _: i64 = self
                .scripts
                .hdel_if
                .key(g("project_names"))
                .arg(release)
                .arg(&project.id)
                .invoke_async(&mut self.conn())
                .await?;
        }
        status
    }

    async fn delete_project(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        for _attempt in 0..5 {
            let Some(project) = self.get_project(id).await? else {
                return Err(StoreError::not_found("project", id));
            };
            let token_ids: Vec<String> = self.conn().zrange(p(id, "tokens"), 0, -1).await?;
            let mut inv = self.scripts.delete_project.prepare_invoke();
            inv.key(p(id, "project"))
                .key(p(id, "tokens"))
                .key(p(id, "budget"));
            for t in &token_ids {
                inv.key(token_key(id, t));
            }
            inv.arg(token_ids.len());
            let reply: redis::Value = inv.invoke_async(&mut self.conn()).await?;
            let rows: Vec<Vec<u8>> = match reply {
                redis::Value::Int(-1) => return Err(StoreError::not_found("project", id)),
                redis::Value::Int(_) => continue,
                other => redis::from_redis_value(other)
                    .map_err(|e| StoreError::Corrupt(format!("project deletion reply: {e}")))?,
            };
            let mut revoke = Vec::new();
            for pair in rows.chunks(2) {
                let [json, revoked_at] = pair else { break };
                let mut t: TokenRecord = decode("token", json)?;
                if revoked_at.is_empty() && t.expires_at > now {
                    t.revoked_at = Some(now);
                    revoke.push(t);
                }
            }
            // Leases and usage of the project (its slot), and their global index entries.
            let lease_ids: Vec<String> = self.conn().hkeys(p(id, "leases")).await?;
            let _: i64 = self.conn().del(ledger::project_lease_keys(id)).await?;
            if !lease_ids.is_empty() {
                let _: i64 = self.conn().hdel(g("leases"), &lease_ids).await?;
            }
            let mut inv = self.scripts.forget_project.prepare_invoke();
            inv.key(g("project_names"))
                .key(g("projects"))
                .key(g("tokens"))
                .key(g("token_project"))
                .key(g("revoked"))
                .arg(&project.name)
                .arg(id)
                .arg(token_ids.len());
            for t in &token_ids {
                inv.arg(t);
            }
            for t in &revoke {
                inv.arg(&t.id).arg(t.expires_at);
            }
            let _: i64 = inv.invoke_async(&mut self.conn()).await?;
            return Ok(revoke);
        }
        Err(StoreError::Backend(
            "project kept changing during deletion; retry".into(),
        ))
    }

    async fn create_provider(&self, provider: &Provider) -> Result<(), StoreError> {
        let r: i64 = self
            .scripts
            .create_indexed
            .key(g("provider_names"))
            .key(g("providers"))
            .arg(&provider.id)
            .arg(&provider.name)
            .arg(encode(provider)?)
            .invoke_async(&mut self.conn())
            .await?;
        match r {
            1 => Ok(()),
            0 => Err(StoreError::conflict("provider", &provider.name)),
            _ => Err(StoreError::conflict("provider", &provider.id)),
        }
    }

    async fn get_provider(&self, id: &str) -> Result<Option<Provider>, StoreError> {
        self.hash_record(&g("providers"), id, "provider").await
    }

    async fn provider_by_name(&self, name: &str) -> Result<Option<Provider>, StoreError> {
        self.by_index(&g("provider_names"), &g("providers"), name, "provider")
            .await
    }

    async fn list_providers(&self, page: &PageRequest) -> Result<Page<Provider>, StoreError> {
        let all = self.hash_records(&g("providers"), "provider").await?;
        Ok(page_in_memory(all, page, |p: &Provider| p.id.clone()))
    }

    async fn update_provider(&self, provider: &Provider) -> Result<(), StoreError> {
        let r = self
            .put_indexed(
                &g("provider_names"),
                &g("providers"),
                &provider.id,
                &provider.name,
                &encode(provider)?,
                "name",
                "update",
            )
            .await?;
        match r {
            1 => Ok(()),
            0 => Err(StoreError::conflict("provider", &provider.name)),
            _ => Err(StoreError::not_found("provider", &provider.id)),
        }
    }

    async fn delete_provider(&self, id: &str) -> Result<(), StoreError> {
        let r: i64 = self
            .scripts
            .delete_indexed
            .key(g("provider_names"))
            .key(g("providers"))
            .arg(id)
            .arg("name")
            .invoke_async(&mut self.conn())
            .await?;
        if r == 1 {
            Ok(())
        } else {
            Err(StoreError::not_found("provider", id))
        }
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let (prj, id) = (&token.project_id, &token.id);
        // Index first: an index entry without a record reads as "no such token". (`MULTI`
        // over `{g}` keys only: one slot, so it runs on a cluster too.)
        let _: () = redis::pipe()
            .atomic()
            .hset(g("token_project"), id, prj)
            .ignore()
            .zadd(g("tokens"), id, 0)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        let r: i64 = self
            .scripts
            .create_token
            .key(p(prj, "project"))
            .key(p(prj, "tokens"))
            .key(token_key(prj, id))
            .arg(id)
            .arg(encode(token)?)
            .invoke_async(&mut self.conn())
            .await?;
        match r {
            1 => Ok(()),
            -1 => Err(StoreError::conflict("token", id)),
            _ => {
                let _: () = redis::pipe()
                    .atomic()
                    .hdel(g("token_project"), id)
                    .ignore()
                    .zrem(g("tokens"), id)
                    .ignore()
                    .query_async(&mut self.conn())
                    .await?;
                Err(StoreError::not_found("project", prj))
            }
        }
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let prj: Option<String> = self.conn().hget(g("token_project"), id).await?;
        let Some(prj) = prj else { return Ok(None) };
        Ok(self.load_tokens(&[(prj, id.to_owned())]).await?.pop())
    }

    async fn list_tokens(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError> {
        let zset = match project_id {
            Some(prj) => p(prj, "tokens"),
            None => g("tokens"),
        };
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(&zset)
            .arg(Self::lex_after(&page.cursor))
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(page.limit.saturating_add(1))
            .query_async(&mut self.conn())
            .await?;
        let pairs: Vec<(String, String)> = match project_id {
            Some(prj) => ids.into_iter().map(|t| (prj.to_owned(), t)).collect(),
            None if ids.is_empty() => Vec::new(),
            None => {
                let prjs: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(g("token_project"))
                    .arg(&ids)
                    .query_async(&mut self.conn())
                    .await?;
                ids.into_iter()
                    .zip(prjs)
                    .filter_map(|(t, prj)| prj.map(|prj| (prj, t)))
                    .collect()
            }
        };
        let items = self.load_tokens(&pairs).await?;
        Ok(Page::from_sorted(items, page.limit, |t: &TokenRecord| {
            t.id.clone()
        }))
    }

    async fn revoke_token(&self, id: &str, now: Timestamp) -> Result<Revocation, StoreError> {
        let token = self
            .get_token(id)
            .await?
            .ok_or_else(|| StoreError::not_found("token", id))?;
        // Global revocation set first: a crash after this still refuses the token. Entries
        // of tokens expired by now are pruned on the way (`MULTI` on one `{g}` key).
        let (_, added): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(g("revoked"))
            .arg("-inf")
            .arg(now)
            .cmd("ZADD")
            .arg(g("revoked"))
            .arg("NX")
            .arg(token.expires_at)
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        let marked: i64 = self
            .scripts
            .revoke_token
            .key(token_key(&token.project_id, id))
            .arg(now)
            .invoke_async(&mut self.conn())
            .await?;
        if marked == -1 {
            return Err(StoreError::not_found("token", id));
        }
        let token = self
            .get_token(id)
            .await?
            .ok_or_else(|| StoreError::not_found("token", id))?;
        Ok(Revocation {
            token,
            newly_revoked: marked == 1 || added == 1,
        })
    }

    async fn revoked_tokens(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(g("revoked"))
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.conn())
            .await?)
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let r = self
            .put_indexed(
                &g("apikey_hashes"),
                &g("apikeys"),
                &key.id,
                &key.key_hash,
                &encode(key)?,
                "key_hash",
                "put",
            )
            .await?;
        if r == 1 {
            Ok(())
        } else {
            Err(StoreError::conflict("api key", &key.id))
        }
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.by_index(&g("apikey_hashes"), &g("apikeys"), key_hash, "api key")
            .await
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError> {
        let all = self.hash_records(&g("apikeys"), "api key").await?;
        Ok(page_in_memory(all, page, |k: &ApiKeyRecord| k.id.clone()))
    }

    async fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        let r: i64 = self
            .scripts
            .delete_indexed
            .key(g("apikey_hashes"))
            .key(g("apikeys"))
            .arg(id)
            .arg("key_hash")
            .invoke_async(&mut self.conn())
            .await?;
        if r == 1 {
            Ok(())
        } else {
            Err(StoreError::not_found("api key", id))
        }
    }

    async fn put_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let _: i64 = self
            .conn()
            .hset(g("signing_keys"), &key.kid, encode(key)?)
            .await?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut all: Vec<SigningKeyRecord> =
            self.hash_records(&g("signing_keys"), "signing key").await?;
        all.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(all)
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.conn().hget(g("meta"), key).await?)
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _: i64 = self.conn().hset(g("meta"), key, value).await?;
        Ok(())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let _: String = redis::cmd("XADD")
            .arg(g("audit"))
            .arg("MAXLEN")
            .arg("~")
            .arg(AUDIT_MAXLEN)
            .arg("*")
            .arg("json")
            .arg(encode(event)?)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let batch = page.limit.clamp(50, 500);
        let mut end = match &page.cursor {
            Some(c) => format!("({c}"),
            None => "+".into(),
        };
        let mut items: Vec<(String, AuditEvent)> = Vec::new();
        let mut scanned = 0usize;
        loop {
            let rows: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XREVRANGE")
                .arg(g("audit"))
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(batch)
                .query_async(&mut self.conn())
                .await?;
            let exhausted = rows.len() < batch;
            for (stream_id, fields) in rows {
                scanned += 1;
                end = format!("({stream_id}");
                let Some((_, json)) = fields.into_iter().find(|(f, _)| f == "json") else {
                    continue;
                };
                let e: AuditEvent = decode("audit event", &json)?;
                if filter.matches(&e) {
                    items.push((stream_id, e));
                    if items.len() > page.limit {
                        items.truncate(page.limit);
                        let next_cursor = items.last().map(|(s, _)| s.clone());
                        return Ok(Page {
                            items: items.into_iter().map(|(_, e)| e).collect(),
                            next_cursor,
                        });
                    }
                }
            }
            if exhausted {
                return Ok(Page {
                    items: items.into_iter().map(|(_, e)| e).collect(),
                    next_cursor: None,
                });
            }
            if scanned >= AUDIT_SCAN_BUDGET {
                // Rare filter: hand back what matched and where to resume.
                let next_cursor = end.strip_prefix('(').map(str::to_owned);
                return Ok(Page {
                    items: items.into_iter().map(|(_, e)| e).collect(),
                    next_cursor,
                });
            }
        }
    }

    async fn revoke_session(&self, jti: &str, expires_at: Timestamp) -> Result<(), StoreError> {
        if expires_at <= crate::model::now() {
            return Ok(());
        }
        let _: () = redis::cmd("SET")
            .arg(g(&format!("session_revoked:{jti}")))
            .arg(1)
            .arg("EXAT")
            .arg(expires_at)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn session_revoked(&self, jti: &str, _now: Timestamp) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .exists(g(&format!("session_revoked:{jti}")))
            .await?)
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let v: Option<Vec<u8>> = self.conn().hget(g("apikeys"), id).await?;
        v.map(|v| decode("api key", &v)).transpose()
    }

    async fn append_event(&self, event: &ControlEvent, now: Timestamp) -> Result<u64, StoreError> {
        let json = utf8(encode(event)?)?;
        Ok(self
            .scripts
            .append_event
            .key(g("event_seq"))
            .key(g("events"))
            .arg(now)
            .arg(json)
            .arg(self.retain_events)
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn events_since(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        let (last, first, members): (u64, u64, Vec<String>) = self
            .scripts
            .events_since
            .key(g("event_seq"))
            .key(g("events"))
            .arg(after)
            .arg(limit.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        let gap = after > last || (after < last && (first == 0 || first > after.saturating_add(1)));
        let events = if gap {
            Vec::new()
        } else {
            members
                .iter()
                .map(|m| parse_event(m))
                .collect::<Result<_, _>>()?
        };
        Ok(EventBatch {
            events,
            gap,
            last_id: last,
        })
    }

    async fn last_event_id(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = self.conn().get(g("event_seq")).await?;
        Ok(v.unwrap_or(0))
    }

    async fn budget_usage(
        &self,
        project_id: &str,
        token_id: Option<&str>,
        now: Timestamp,
    ) -> Result<BudgetUsage, StoreError> {
        let Some(project) = self.get_project(project_id).await? else {
            return Ok(BudgetUsage::default());
        };
        let (prefix, period) = match token_id {
            None => (String::new(), project.budget.period),
            Some(t) => {
                let json: Option<Vec<u8>> =
                    self.conn().hget(token_key(project_id, t), "json").await?;
                let Some(json) = json else {
                    return Ok(BudgetUsage::default());
                };
                let tok: TokenRecord = decode("token", &json)?;
                (format!("tok:{t}:"), tok.budget.period)
            }
        };
        let (spent, leased, leases): (Option<u64>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(p(project_id, "budget"))
            .arg(format!("{prefix}spent:{}", period_key(period, now)))
            .arg(format!("{prefix}out"))
            .arg(format!("{prefix}n"))
            .query_async(&mut self.conn())
            .await?;
        Ok(BudgetUsage {
            spent: Money(spent.unwrap_or(0)),
            leased: Money(leased.unwrap_or(0)),
            leases: leases.unwrap_or(0),
        })
    }

    async fn grant_lease(
        &self,
        req: &LeaseRequest,
        lease_id: &str,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<LeaseGrant, StoreError> {
        let prj: Option<String> = self.conn().hget(g("token_project"), &req.token_id).await?;
        let Some(prj) = prj else {
            return Ok(LeaseGrant {
                lease_id: String::new(),
                granted: Money::ZERO,
                expires_at: 0,
                budget_remaining: Money::ZERO,
                denied: Some(iron_core::lease::Denial::UnknownToken),
            });
        };
        let call = ledger::grant_call(&prj, req, lease_id, now, policy);
        let reply = self.run(&call).await?;
        let grant = ledger::grant_reply(lease_id, false, reply)?
            .ok_or_else(|| StoreError::Corrupt("grant reply".into()))?;
        if grant.denied.is_none() {
            // Indexed after the grant: if this write is lost, the lease cannot be found, so
            // it expires and counts as fully spent (safe).
            let _: i64 = self
                .conn()
                .hset(g("leases"), lease_id, format!("{prj} {}", req.token_id))
                .await?;
        }
        Ok(grant)
    }

    async fn extend_lease(
        &self,
        lease_id: &str,
        requested: Money,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<LeaseGrant, StoreError> {
        let (prj, tok) = self
            .lease_home(lease_id)
            .await?
            .ok_or_else(|| StoreError::not_found("lease", lease_id))?;
        let call = ledger::extend_call(&prj, &tok, lease_id, requested, now, policy);
        let reply = self.run(&call).await?;
        ledger::grant_reply(lease_id, true, reply)?
            .ok_or_else(|| StoreError::not_found("lease", lease_id))
    }

    async fn report_lease(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError> {
        self.report_or_release(lease_id, report, false, now, policy)
            .await
    }

    async fn release_lease(
        &self,
        lease_id: &str,
        report: &LeaseReport,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<ReportAck, StoreError> {
        self.report_or_release(lease_id, report, true, now, policy)
            .await
    }

    async fn expire_leases(
        &self,
        now: Timestamp,
        policy: &LeasePolicy,
    ) -> Result<SweepStats, StoreError> {
        let projects: Vec<String> = self.conn().zrange(g("projects"), 0, -1).await?;
        if projects.is_empty() {
            return Ok(SweepStats::default());
        }
        // Only projects with leases or recorded event ids need the script.
        let mut cmds = Vec::with_capacity(projects.len() * 2);
        for prj in &projects {
            let mut hlen = redis::cmd("HLEN");
            hlen.arg(p(prj, "leases"));
            let mut zcard = redis::cmd("ZCARD");
            zcard.arg(p(prj, "usage:ids"));
            cmds.push(hlen);
            cmds.push(zcard);
        }
        let sizes: Vec<u64> = self.each(cmds).await?;
        let mut stats = SweepStats::default();
        for (prj, sz) in projects.iter().zip(sizes.chunks(2)) {
            if sz.iter().all(|n| *n == 0) {
                continue;
            }
            let call = ledger::expire_call(prj, now, policy);
            let (expired, purged): (u64, Vec<String>) = self.run(&call).await?;
            stats.expired += expired;
            stats.purged += purged.len() as u64;
            if !purged.is_empty() {
                let _: i64 = self.conn().hdel(g("leases"), &purged).await?;
            }
        }
        Ok(stats)
    }

    async fn get_lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let Some((prj, _)) = self.lease_home(lease_id).await? else {
            return Ok(None);
        };
        let raw: Option<Vec<u8>> = self.conn().hget(p(&prj, "leases"), lease_id).await?;
        raw.map(|r| decode::<StoredLease>("lease", &r).and_then(|s| s.into_record(lease_id, &prj)))
            .transpose()
    }

    async fn list_usage(
        &self,
        filter: &UsageFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError> {
        let projects: Vec<String> = match &filter.project {
            Some(prj) => vec![prj.clone()],
            None => self.conn().zrange(g("projects"), 0, -1).await?,
        };
        // Cursor: `<project id>/<stream id>` of the last entry returned.
        let cursor = page
            .cursor
            .as_deref()
            .and_then(|c| c.split_once('/'))
            .map(|(p, s)| (p.to_owned(), s.to_owned()));
        let batch = page.limit.clamp(50, 1_000);
        let mut items: Vec<UsageEvent> = Vec::new();
        let mut scanned = 0usize;
        let mut last_cursor: Option<String> = None;
        for prj in projects {
            let mut start = match &cursor {
                Some((cp, _)) if prj.as_str() < cp.as_str() => continue,
                Some((cp, sid)) if prj == *cp => format!("({sid}"),
                // Entry ids are the time Redis appended the event, which is after the
                // proxy's `at_ms`; the slack covers clock skew between proxy and Redis.
                _ => match filter.since_ms {
                    Some(since) => since.saturating_sub(USAGE_CLOCK_SLACK_MS).to_string(),
                    None => "-".to_owned(),
                },
            };
            loop {
                let rows: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XRANGE")
                    .arg(p(&prj, "usage"))
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(batch)
                    .query_async(&mut self.conn())
                    .await?;
                let exhausted = rows.len() < batch;
                for (sid, fields) in rows {
                    scanned += 1;
                    start = format!("({sid}");
                    let Some((_, json)) = fields.into_iter().find(|(f, _)| f == "e") else {
                        continue;
                    };
                    let e: UsageEvent = decode("usage event", &json)?;
                    if filter.matches(&e) {
                        if items.len() == page.limit {
                            // One more exists: the page ends at the previous entry.
                            return Ok(Page {
                                items,
                                next_cursor: last_cursor.take(),
                            });
                        }
                        items.push(e);
                    }
                    last_cursor = Some(format!("{prj}/{sid}"));
                    if scanned >= USAGE_SCAN_BUDGET {
                        return Ok(Page {
                            items,
                            next_cursor: last_cursor.take(),
                        });
                    }
                }
                if exhausted {
                    break;
                }
            }
        }
        Ok(Page {
            items,
            next_cursor: None,
        })
    }

    async fn put_price(&self, price: &PriceOverride) -> Result<(), StoreError> {
        let _: i64 = self
            .conn()
            .hset(g("prices"), &price.model, encode(price)?)
            .await?;
        Ok(())
    }

    async fn list_prices(&self) -> Result<Vec<PriceOverride>, StoreError> {
        let mut all: Vec<PriceOverride> = self.hash_records(&g("prices"), "price").await?;
        all.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(all)
    }

    async fn rate_take(
        &self,
        takes: &[iron_core::ratelimit::RateTake],
        now_ms: u64,
    ) -> Result<Vec<iron_core::ratelimit::RateGrant>, StoreError> {
        super::redis_ratelimit::rate_take(&mut self.conn(), takes, now_ms).await
    }
}

/// A lease as the Lua scripts store it (amounts as decimal strings).
#[derive(serde::Deserialize)]
struct StoredLease {
    tok: String,
    prx: String,
    g: String,
    s: String,
    seq: String,
    exp: String,
    st: String,
    tp: String,
    x: String,
    #[serde(default)]
    xp: String,
    #[serde(default)]
    xt: String,
    ca: String,
    pa: String,
}

impl StoredLease {
    fn into_record(self, id: &str, project_id: &str) -> Result<LeaseRecord, StoreError> {
        let n = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("lease {id}: bad number `{v}`")))
        };
        let state = match self.st.as_str() {
            "open" => LeaseState::Open,
            "expired" => LeaseState::Expired,
            "released" => LeaseState::Released,
            other => return Err(StoreError::Corrupt(format!("lease {id}: state `{other}`"))),
        };
        let token_period = match self.tp.as_str() {
            "daily" => Period::Daily,
            "monthly" => Period::Monthly,
            _ => Period::Total,
        };
        Ok(LeaseRecord {
            id: id.to_owned(),
            token_id: self.tok,
            project_id: project_id.to_owned(),
            proxy_id: self.prx,
            granted: Money(n(&self.g)?),
            spent: Money(n(&self.s)?),
            seq: n(&self.seq)?,
            expires_at: n(&self.exp)?,
            state,
            token_period,
            expiry_charge: Money(n(&self.x)?),
            expiry_project_key: self.xp,
            expiry_token_key: self.xt,
            created_at: n(&self.ca)?,
            purge_at: n(&self.pa)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::cluster_nodes;

    #[test]
    fn cluster_urls_split_into_seed_nodes() {
        assert!(cluster_nodes("redis://h:6379").is_none());
        assert!(cluster_nodes("rediss://h:6379").is_none());
        assert_eq!(
            cluster_nodes("redis+cluster://a:7000,b:7001, c:7002")
                .unwrap()
                .unwrap(),
            ["redis://a:7000", "redis://b:7001", "redis://c:7002"]
        );
        // Credentials (even with an encoded `@`) and the query go to every node.
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p%40ss@a:7000,b:7001/?protocol=resp3")
                .unwrap()
                .unwrap(),
            [
                "rediss://u:p%40ss@a:7000/?protocol=resp3",
                "rediss://u:p%40ss@b:7001/?protocol=resp3"
            ]
        );
        assert_eq!(
            cluster_nodes("redis+cluster://a:7000/0").unwrap().unwrap(),
            ["redis://a:7000/0"]
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://:pw@a:1/3",
        ] {
            let e = cluster_nodes(bad).unwrap().unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
