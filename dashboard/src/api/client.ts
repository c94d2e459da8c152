// The typed client for the iron-control REST API (`/v1`, same origin, session cookie).
// Every call goes through `ENDPOINTS`, one table of (method, path template); the vitest
// suite checks each entry against the OpenAPI snapshot in dashboard/openapi.json.
// The API key is sent exactly once, in `signIn`; it is never stored by the client.

import type {
  AuditEvent,
  AuditFilter,
  Budget,
  CreateProject,
  CreateProvider,
  Deleted,
  List,
  MintedToken,
  MintToken,
  Overview,
  PatchProject,
  PatchProvider,
  Project,
  Provider,
  Session,
  SetBudget,
  Token,
  UsageEvent,
  UsageFilter,
  UsageStats,
  UsageStatsQuery,
} from './types'

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

export interface Endpoint {
  readonly method: Method
  /** OpenAPI path template, e.g. `/v1/projects/{project}`. */
  readonly path: string
  /** Query parameters the client may send (control rejects unknown ones). */
  readonly query?: readonly string[]
}

const PAGE = ['limit', 'cursor'] as const

/** Every (method, path) the dashboard calls. */
export const ENDPOINTS = {
  signIn: { method: 'POST', path: '/v1/session' },
  session: { method: 'GET', path: '/v1/session' },
  signOut: { method: 'DELETE', path: '/v1/session' },
  listProjects: { method: 'GET', path: '/v1/projects', query: PAGE },
  createProject: { method: 'POST', path: '/v1/projects' },
  getProject: { method: 'GET', path: '/v1/projects/{project}' },
  patchProject: { method: 'PATCH', path: '/v1/projects/{project}' },
  setBudget: { method: 'PUT', path: '/v1/projects/{project}/budget' },
  getBudget: { method: 'GET', path: '/v1/budgets/{project}' },
  listProjectTokens: { method: 'GET', path: '/v1/projects/{project}/tokens', query: PAGE },
  mintToken: { method: 'POST', path: '/v1/projects/{project}/tokens' },
  revokeToken: { method: 'DELETE', path: '/v1/tokens/{token}' },
  listProviders: { method: 'GET', path: '/v1/providers', query: PAGE },
  createProvider: { method: 'POST', path: '/v1/providers' },
  patchProvider: { method: 'PATCH', path: '/v1/providers/{provider}' },
  deleteProvider: { method: 'DELETE', path: '/v1/providers/{provider}' },
  rotateKey: { method: 'POST', path: '/v1/providers/{provider}/rotate-key' },
  listUsage: {
    method: 'GET',
    path: '/v1/usage',
    query: ['project', 'token', 'model', 'since', 'until', 'format', ...PAGE],
  },
  listAudit: { method: 'GET', path: '/v1/audit', query: ['actor', 'action', 'target', 'since', ...PAGE] },
  events: { method: 'GET', path: '/v1/events' },
  statsOverview: { method: 'GET', path: '/v1/stats/overview' },
  statsUsage: { method: 'GET', path: '/v1/stats/usage', query: ['since', 'until', 'bucket_secs', 'group'] },
} as const satisfies Record<string, Endpoint>

export type EndpointName = keyof typeof ENDPOINTS

/** An error response of the API (`{"error":{"type","message","code"}}`) or a network failure. */
export class ApiError extends Error {
  readonly status: number
  readonly type: string
  readonly code: string

  constructor(status: number, type: string, code: string, message: string) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.type = type
    this.code = code
  }
}

/** Builds the error for a non-2xx response from its body text. */
export function parseErrorBody(status: number, text: string): ApiError {
  try {
    const body: unknown = JSON.parse(text)
    if (body && typeof body === 'object' && 'error' in body) {
      const e = (body as { error: unknown }).error
      if (e && typeof e === 'object') {
        const o = e as Record<string, unknown>
        const str = (v: unknown, d: string) => (typeof v === 'string' && v !== '' ? v : d)
        return new ApiError(
          status,
          str(o.type, 'api_error'),
          str(o.code, `http_${status}`),
          str(o.message, `HTTP ${status}`),
        )
      }
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError(status, 'api_error', `http_${status}`, `HTTP ${status}`)
}

type Query = Record<string, string | number | undefined | null>

/** Fills `{name}` placeholders (URL-encoded) and appends the non-empty query parameters. */
export function buildUrl(path: string, params: Record<string, string> = {}, query: Query = {}): string {
  const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = params[name]
    if (v === undefined) throw new Error(`missing path parameter ${name}`)
    return encodeURIComponent(v)
  })
  const qs = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') qs.append(k, String(v))
  }
  const s = qs.toString()
  return s ? `${filled}?${s}` : filled
}

/** The CSV export link for the usage table's filters (`/v1/usage?format=csv&…`). */
export function usageCsvUrl(filter: UsageFilter): string {
  return buildUrl(ENDPOINTS.listUsage.path, {}, { format: 'csv', ...filter })
}

export interface RequestOptions {
  params?: Record<string, string>
  query?: Query
  body?: unknown
}

type Fetch = typeof fetch

/** Called on every 401 except from the sign-in call itself (the session expired). */
let unauthorizedHandler: (() => void) | null = null
export function onUnauthorized(fn: (() => void) | null): void {
  unauthorizedHandler = fn
}

let fetchImpl: Fetch | null = null
/** Tests inject a mock; the app uses the global `fetch`. */
export function setFetch(f: Fetch | null): void {
  fetchImpl = f
}

export async function request<T>(name: EndpointName, opts: RequestOptions = {}): Promise<T> {
  const ep: Endpoint = ENDPOINTS[name]
  for (const k of Object.keys(opts.query ?? {})) {
    if (!ep.query?.includes(k)) throw new Error(`${name}: query parameter ${k} is not declared in ENDPOINTS`)
  }
  const url = buildUrl(ep.path, opts.params, opts.query)
  const init: RequestInit = {
    method: ep.method,
    credentials: 'same-origin',
    headers: { accept: 'application/json' },
  }
  if (opts.body !== undefined) {
    init.body = JSON.stringify(opts.body)
    init.headers = { accept: 'application/json', 'content-type': 'application/json' }
  }
  let resp: Response
  try {
    resp = await (fetchImpl ?? fetch)(url, init)
  } catch (e) {
    throw new ApiError(0, 'network_error', 'network_error', `Cannot reach the control API: ${String(e)}`)
  }
  const text = await resp.text()
  if (!resp.ok) {
    const err = parseErrorBody(resp.status, text)
    if (resp.status === 401 && name !== 'signIn' && name !== 'session') unauthorizedHandler?.()
    throw err
  }
  if (resp.status === 204 || text === '') return undefined as T
  try {
    return JSON.parse(text) as T
  } catch {
    throw new ApiError(resp.status, 'api_error', 'invalid_response', 'The server sent an invalid JSON response')
  }
}

const p = (project: string) => ({ project })

export const api = {
  signIn: (apiKey: string) => request<Session>('signIn', { body: { api_key: apiKey } }),
  session: () => request<Session>('session'),
  signOut: () => request<void>('signOut'),

  listProjects: (limit = 100, cursor?: string) =>
    request<List<Project>>('listProjects', { query: { limit, cursor } }),
  createProject: (body: CreateProject) => request<Project>('createProject', { body }),
  getProject: (id: string) => request<Project>('getProject', { params: p(id) }),
  patchProject: (id: string, body: PatchProject) =>
    request<Project>('patchProject', { params: p(id), body }),
  setBudget: (id: string, body: SetBudget) => request<Project>('setBudget', { params: p(id), body }),
  getBudget: (id: string) => request<Budget>('getBudget', { params: p(id) }),

  listProjectTokens: (id: string, limit = 100, cursor?: string) =>
    request<List<Token>>('listProjectTokens', { params: p(id), query: { limit, cursor } }),
  mintToken: (id: string, body: MintToken) => request<MintedToken>('mintToken', { params: p(id), body }),
  revokeToken: (token: string) => request<Token>('revokeToken', { params: { token } }),

  listProviders: (limit = 100, cursor?: string) =>
    request<List<Provider>>('listProviders', { query: { limit, cursor } }),
  createProvider: (body: CreateProvider) => request<Provider>('createProvider', { body }),
  patchProvider: (provider: string, body: PatchProvider) =>
    request<Provider>('patchProvider', { params: { provider }, body }),
  deleteProvider: (provider: string) => request<Deleted>('deleteProvider', { params: { provider } }),
  rotateKey: (provider: string, apiKey: string) =>
    request<Provider>('rotateKey', { params: { provider }, body: { api_key: apiKey } }),

  listUsage: (filter: UsageFilter, limit = 100, cursor?: string) =>
    request<List<UsageEvent>>('listUsage', { query: { ...filter, limit, cursor } }),
  listAudit: (filter: AuditFilter, limit = 50, cursor?: string) =>
    request<List<AuditEvent>>('listAudit', { query: { ...filter, limit, cursor } }),

  statsOverview: () => request<Overview>('statsOverview'),
  statsUsage: (q: UsageStatsQuery) => request<UsageStats>('statsUsage', { query: { ...q } }),
}

/** A user-facing message for any thrown value. */
export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) return e.message
  if (e instanceof Error) return e.message
  return String(e)
}
