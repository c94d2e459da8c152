//! Rate-limit counters of the Redis store (RPM/TPM, `docs/decisions/0003-rate-limits.md`).
//!
//! Where it sits: `POST /internal/v1/ratelimits` → `service::ratelimits` → here. One
//! versioned Lua script ([`RATE_TAKE_V1`]) applies a batch of takes of one project
//! atomically, so several control replicas sharing one Redis agree on every window.
//!
//! | key | type | content |
//! |---|---|---|
//! | `iron:{prj_…}:rl:<scope>:<kind>` | hash | unix second → units counted in that second; TTL 2 min |
//!
//! `<scope>` is `token:tok_…` or `project:prj_…`, `<kind>` `requests` or `tokens`. Every key
//! of a call carries the project's hash tag (Redis Cluster: one slot; takes of several
//! projects are one call per project, so each goes to its own slot's master). The Lua rule is the
//! one of `iron_core::ratelimit::Window::take` (the conformance suite runs both stores
//! through the same cases); buckets from a clock ahead of this replica's are counted too
//! (never over-admit) and buckets older than the window are deleted on the way.

use iron_core::ratelimit::{BUCKETS, RateGrant, RateTake, WINDOW_SECS};
use redis::Script;

use super::StoreError;
use super::redis::Conn;

/// Key TTL: two windows, so an idle counter disappears on its own.
pub const KEY_TTL_MS: u64 = 2 * WINDOW_SECS * 1000;

/// KEYS: one counter per take. ARGV: now (unix ms), buckets counted (61), key TTL (ms), then per
/// take `limit, want, min, force (0|1)`. Returns per take `{granted, remaining,
/// retry_after_ms, reset_ms}`.
pub const RATE_TAKE_V1: &str = r"
local now = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local now_s = math.floor(now / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local a = 3 + (i - 1) * 4
  local limit = tonumber(ARGV[a + 1])
  local want = tonumber(ARGV[a + 2])
  local min = tonumber(ARGV[a + 3])
  local force = ARGV[a + 4] == '1'
  local flat = redis.call('HGETALL', key)
  local used, live, stale = 0, {}, {}
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j]) or 0
    local c = tonumber(flat[j + 1]) or 0
    if s + win > now_s then
      used = used + c
      live[#live + 1] = {s, c}
    else
      stale[#stale + 1] = flat[j]
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  local need = math.min(math.max(min, 1), math.max(want, 1))
  local granted = 0
  if force then
    granted = want
  else
    local room = limit - used
    if room >= need then granted = math.min(want, room) end
  end
  if granted > 0 then
    redis.call('HINCRBY', key, string.format('%d', now_s), string.format('%d', granted))
    live[#live + 1] = {now_s, granted}
  end
  if #live > 0 then redis.call('PEXPIRE', key, ttl) end
  local remaining = limit - used - granted
  if remaining < 0 then remaining = 0 end
  local retry = 0
  if granted == 0 and not force then
    if need > limit then
      retry = win * 1000
    else
      table.sort(live, function(x, y) return x[1] < y[1] end)
      local left = used
      retry = 1
      for _, b in ipairs(live) do
        left = left - b[2]
        if left + need <= limit then
          retry = math.max((b[1] + win) * 1000 - now, 1)
          break
        end
      end
    end
  end
  local reset = 0
  for _, b in ipairs(live) do
    local r = (b[1] + win) * 1000 - now
    if r > reset then reset = r end
  end
  out[i] = {granted, remaining, retry, reset}
end
return out
";

/// The script's versioned name (logs, tests).
pub const RATE_TAKE_NAME: &str = "RATE_TAKE_V1";

/// The counter key of `take` in `project_id`'s slot.
pub fn counter_key(project_id: &str, take: &RateTake) -> String {
    format!(
        "iron:{{{project_id}}}:rl:{}:{}",
        take.scope,
        take.kind.as_str()
    )
}

/// One script call: what is sent to Redis (built separately so tests can check it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateCall {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

/// The call for `takes`, all of `project_id`.
pub fn rate_call(project_id: &str, takes: &[&RateTake], now_ms: u64) -> RateCall {
    let mut args = vec![
        now_ms.to_string(),
        BUCKETS.to_string(),
        KEY_TTL_MS.to_string(),
    ];
    let mut keys = Vec::with_capacity(takes.len());
    for t in takes {
        keys.push(counter_key(project_id, t));
        args.push(t.limit.to_string());
        args.push(t.want.to_string());
        args.push(t.min.to_string());
        args.push(if t.force { "1" } else { "0" }.to_owned());
    }
    RateCall { keys, args }
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// [`RATE_TAKE_V1`], hashed once.
static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(RATE_TAKE_V1));

/// Runs `takes` (grouped by project, one script call per project, answers in take order).
pub(super) async fn rate_take(
    conn: &mut Conn,
    takes: &[RateTake],
    now_ms: u64,
) -> Result<Vec<RateGrant>, StoreError> {
    let mut grants = vec![RateGrant::default(); takes.len()];
    let mut projects: Vec<&str> = Vec::new();
    for t in takes {
        let p = t
            .project_id()
            .ok_or_else(|| StoreError::Backend("rate take without a project".into()))?;
        if !projects.contains(&p) {
            projects.push(p);
        }
    }
    for p in projects {
        let idx: Vec<usize> = (0..takes.len())
            .filter(|&i| takes[i].project_id() == Some(p))
            .collect();
        let group: Vec<&RateTake> = idx.iter().map(|&i| &takes[i]).collect();
        let call = rate_call(p, &group, now_ms);
        let mut inv = SCRIPT.prepare_invoke();
        for k in &call.keys {
            inv.key(k);
        }
        for a in &call.args {
            inv.arg(a);
        }
        let reply: Vec<(i64, i64, i64, i64)> = inv.invoke_async(conn).await?;
        if reply.len() != idx.len() {
            return Err(StoreError::Corrupt(format!(
                "{RATE_TAKE_NAME} answered {} grants for {} takes",
                reply.len(),
                idx.len()
            )));
        }
        for (i, (granted, remaining, retry, reset)) in idx.into_iter().zip(reply) {
            grants[i] = RateGrant {
                granted: u(granted),
                remaining: u(remaining),
                retry_after_ms: u(retry),
                reset_ms: u(reset),
            };
        }
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iron_core::ratelimit::RateKind;

    #[test]
    fn call_stays_in_the_project_slot_with_documented_arguments() {
        let tok = RateTake {
            scope: "token:tok_1".into(),
            kind: RateKind::Requests,
            limit: 60,
            want: 1,
            min: 0,
            force: false,
            project: Some("prj_1".into()),
        };
        let prj = RateTake {
            scope: "project:prj_1".into(),
            kind: RateKind::Tokens,
            limit: 12_000,
            want: 500,
            min: 0,
            force: true,
            project: None,
        };
        let call = rate_call("prj_1", &[&tok, &prj], 1_700_000_000_123);
        assert_eq!(
            call.keys,
            vec![
                "iron:{prj_1}:rl:token:tok_1:requests".to_owned(),
                "iron:{prj_1}:rl:project:prj_1:tokens".to_owned(),
            ]
        );
        assert_eq!(
            call.args,
            [
                "1700000000123",
                "61",
                "120000",
                "60",
                "1",
                "0",
                "0",
                "12000",
                "500",
                "0",
                "1"
            ]
        );
        assert!(call.keys.iter().all(|k| k.starts_with("iron:{prj_1}:")));
    }
}
