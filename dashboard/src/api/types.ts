// Response and request shapes of the iron-control REST API as the dashboard uses them.
// Source of truth: control/src/api/views.rs (and the `#[utoipa::path]` handlers); the
// vitest suite checks every path the client calls against dashboard/openapi.json.

/** `total`, `daily` or `monthly`. */
export type Period = 'total' | 'daily' | 'monthly'
export const PERIODS: readonly Period[] = ['total', 'daily', 'monthly']

export type Role = 'admin' | 'viewer' | 'project'

/** `POST /v1/session`, `GET /v1/session`. */
export interface Session {
  key_id: string
  role: Role
  /** Set for project-scoped keys. */
  project: string | null
}

/** A page of results (`?limit=&cursor=`). */
export interface List<T> {
  data: T[]
  next_cursor: string | null
}

export interface Deleted {
  id: string
  deleted: boolean
}

export const PII_TYPES = [
  'EMAIL',
  'PHONE',
  'CREDIT_CARD',
  'US_SSN',
  'IBAN',
  'IP_ADDRESS',
  'SECRET',
] as const
export type PiiType = (typeof PII_TYPES)[number]
export type PiiAction = 'redact' | 'block' | 'allow'
export const PII_ACTIONS: readonly PiiAction[] = ['redact', 'block', 'allow']

export interface PiiPolicy {
  request: Partial<Record<PiiType, PiiAction>>
  response: Partial<Record<PiiType, PiiAction>>
  reversible: boolean
}

export interface Project {
  id: string
  name: string
  /** Decimal USD; `null` = unlimited. */
  budget_usd: string | null
  period: Period
  providers: string[]
  allowed_models: string[]
  /** `null` = default policy (redact everything, reversibly). */
  pii: PiiPolicy | null
  created_at: string
  updated_at: string
}

export interface CreateProject {
  name: string
  budget_usd?: string
  period?: Period
}

export interface PatchProject {
  budget_usd?: string | null
  period?: Period
  allowed_models?: string[]
  pii?: PiiPolicy | null
}

export interface SetBudget {
  budget_usd: string | null
  period?: Period
}

export interface Budget {
  project: string
  project_name: string
  period: Period
  limit_usd: string | null
  spent_usd: string
  leased_usd: string
  remaining_usd: string | null
  limit_microdollars: number | null
  spent_microdollars: number
  leased_microdollars: number
  remaining_microdollars: number | null
  active_leases: number
}

export type TokenStatus = 'active' | 'revoked' | 'expired'

export interface Token {
  id: string
  project: string
  name: string | null
  budget_usd: string | null
  period: Period
  kid: string
  status: TokenStatus
  created_at: string
  expires_at: string
  revoked_at: string | null
  /** Time of the last metered request (project listings; `null` = never or unknown). */
  last_used_at?: string | null
  /** Spend recorded in the usage log (project listings; `null`/absent elsewhere). */
  spent_usd?: string | null
  spent_microdollars?: number | null
}

export interface MintToken {
  name?: string
  budget_usd?: string
  ttl?: string
}

/** The one response that carries the IC token. */
export interface MintedToken {
  id: string
  token: string
  project: string
  project_name: string
  name: string | null
  expires_at: string
}

export type ProviderKind = 'openai' | 'anthropic' | 'openai-compatible' | 'azure-openai'
export const PROVIDER_KINDS: readonly ProviderKind[] = [
  'openai',
  'anthropic',
  'openai-compatible',
  'azure-openai',
]

export type BreakerState = 'closed' | 'open' | 'half_open'

export interface Breaker {
  proxy: string
  state: BreakerState
  updated_at: string
}

/**
 * A provider's own timeouts in milliseconds (`TimeoutsView`); `null` (or absent) = the
 * proxy's `[upstream]` value for that timeout.
 */
export interface ProviderTimeouts {
  connect_ms?: number | null
  first_byte_ms?: number | null
  idle_ms?: number | null
}

/** The three timeout fields, in display order. */
export type TimeoutKey = keyof ProviderTimeouts
export const TIMEOUT_KEYS: readonly TimeoutKey[] = ['connect_ms', 'first_byte_ms', 'idle_ms']
/** Bounds of one timeout in `TimeoutsInput` (whole milliseconds). */
export const TIMEOUT_MIN_MS = 1
export const TIMEOUT_MAX_MS = 600_000
/** The timeout inputs' values: `v-model` on `type="number"` yields a number, or '' when empty. */
export type TimeoutFields = Record<TimeoutKey, string | number>
/** Each timeout's input label. */
export const TIMEOUT_HINTS: Record<TimeoutKey, string> = {
  connect_ms: 'Connect timeout (ms)',
  first_byte_ms: 'First-byte timeout (ms)',
  idle_ms: 'Idle timeout between chunks (ms)',
}

/**
 * `TimeoutsInput`: the same fields, each a whole number from 1 to 600000 ms. In `PATCH` a
 * missing key keeps that timeout and `null` removes it (back to the proxy default).
 */
export type TimeoutsInput = ProviderTimeouts

export interface Provider {
  id: string
  name: string
  kind: ProviderKind
  base_url: string
  models: string[]
  priority: number
  api_key_masked: string
  /** This deployment's own timeouts (ms); a `null` one uses the proxy's `[upstream]` value. */
  timeouts: ProviderTimeouts
  created_at: string
  updated_at: string
  /** Added with issue #9; may be absent or empty. */
  breakers?: Breaker[]
}

export interface CreateProvider {
  name: string
  kind: ProviderKind
  base_url: string
  api_key: string
  models?: string[]
  priority?: number
  /** Default: the proxy's `[upstream]` timeouts. */
  timeouts?: TimeoutsInput | null
}

/** `PATCH /v1/providers/{provider}`: absent fields are left unchanged. */
export interface PatchProvider {
  base_url?: string
  models?: string[]
  priority?: number
  /** A missing key keeps that timeout, `null` removes it; `null` here removes all three. */
  timeouts?: TimeoutsInput | null
}

export interface UsageEvent {
  id: string
  time: string
  project: string
  token: string
  provider: string
  model: string
  input_tokens: number
  cached_input_tokens: number
  cache_write_tokens: number
  output_tokens: number
  cost_usd: string
  cost_microdollars: number
  status: number
  cut_off: boolean
}

export interface UsageFilter {
  project?: string
  token?: string
  model?: string
  since?: string
  until?: string
}

export interface AuditEvent {
  id: string
  time: string
  actor: string
  action: string
  target: string
  project: string | null
  request_id: string
  details: unknown
}

export interface AuditFilter {
  actor?: string
  action?: string
  target?: string
  since?: string
}

export interface OverviewPoint {
  t_ms: number
  requests: number
  errors: number
  spend_microdollars: number
}

/** `GET /v1/stats/overview`. */
export interface Overview {
  now_ms: number
  spend_today_microdollars: number
  requests_per_minute: number
  error_rate: number
  p99_overhead_ms: number | null
  series: OverviewPoint[]
  /** The usage scan was capped: figures are partial. */
  truncated?: boolean
}

export interface UsagePoint {
  t_ms: number
  requests: number
  spend_microdollars: number
  input_tokens: number
  output_tokens: number
}

export interface UsageSeries {
  key: string
  points: UsagePoint[]
}

export type UsageGroup = 'project' | 'model'

/** `GET /v1/stats/usage`. */
export interface UsageStats {
  bucket_secs: number
  since_ms?: number
  until_ms?: number
  series: UsageSeries[]
  truncated?: boolean
}

export interface UsageStatsQuery {
  since: string
  until: string
  bucket_secs: number
  group: UsageGroup
}
