import { afterEach, describe, expect, it, vi } from 'vitest'
import { ApiError, ENDPOINTS, api, buildUrl, onUnauthorized, parseErrorBody, setFetch, usageCsvUrl } from '../src/api/client'
import { mockApi } from './helpers'

afterEach(() => {
  setFetch(null)
  onUnauthorized(null)
})

describe('request building', () => {
  it('fills and encodes path parameters and drops empty query values', () => {
    expect(buildUrl('/v1/projects/{project}/tokens', { project: 'a b/c' }, { limit: 5, cursor: undefined, x: '' })).toBe(
      '/v1/projects/a%20b%2Fc/tokens?limit=5',
    )
    expect(() => buildUrl('/v1/tokens/{token}', {})).toThrow(/token/)
  })

  it('sends the method, path, JSON body and same-origin credentials', async () => {
    const calls = mockApi({
      'POST /v1/projects': { status: 201, body: { id: 'prj_1', name: 'team-a' } },
      'PUT /v1/projects/prj_1/budget': { body: { id: 'prj_1' } },
      'POST /v1/projects/prj_1/tokens': { status: 201, body: { id: 'tok_1', token: 'ic_x' } },
      'DELETE /v1/tokens/tok_1': { body: { id: 'tok_1', status: 'revoked' } },
      'POST /v1/providers/prv_1/rotate-key': { body: { id: 'prv_1' } },
      'PATCH /v1/projects/prj_1': { body: { id: 'prj_1' } },
      'POST /v1/session': { body: { key_id: 'ak_1', role: 'admin', project: null } },
      'DELETE /v1/session': { status: 204 },
    })
    await api.createProject({ name: 'team-a', budget_usd: '1', period: 'total' })
    await api.setBudget('prj_1', { budget_usd: null, period: 'daily' })
    const minted = await api.mintToken('prj_1', { budget_usd: '5', ttl: '7d' })
    await api.revokeToken('tok_1')
    await api.rotateKey('prv_1', 'sk-new')
    await api.patchProject('prj_1', { pii: null, allowed_models: ['gpt-4o*'] })
    const s = await api.signIn('iron_ak_secret')
    await expect(api.signOut()).resolves.toBeUndefined()

    expect(minted.token).toBe('ic_x')
    expect(s.role).toBe('admin')
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      'POST /v1/projects',
      'PUT /v1/projects/prj_1/budget',
      'POST /v1/projects/prj_1/tokens',
      'DELETE /v1/tokens/tok_1',
      'POST /v1/providers/prv_1/rotate-key',
      'PATCH /v1/projects/prj_1',
      'POST /v1/session',
      'DELETE /v1/session',
    ])
    expect(calls[0]!.body).toEqual({ name: 'team-a', budget_usd: '1', period: 'total' })
    expect(calls[1]!.body).toEqual({ budget_usd: null, period: 'daily' })
    expect(calls[2]!.body).toEqual({ budget_usd: '5', ttl: '7d' })
    expect(calls[3]!.body).toBeUndefined()
    expect(calls[4]!.body).toEqual({ api_key: 'sk-new' })
    expect(calls[5]!.body).toEqual({ pii: null, allowed_models: ['gpt-4o*'] })
    expect(calls[6]!.body).toEqual({ api_key: 'iron_ak_secret' })
    expect(calls.every((c) => c.credentials === 'same-origin')).toBe(true)
  })

  it('passes list filters as query parameters', async () => {
    const calls = mockApi({
      'GET /v1/usage': { body: { data: [], next_cursor: null } },
      'GET /v1/audit': { body: { data: [], next_cursor: null } },
      'GET /v1/stats/usage': { body: { bucket_secs: 60, series: [] } },
    })
    await api.listUsage({ project: 'team-a', model: 'gpt-4o-mini', since: '24h' }, 50, 'c1')
    await api.listAudit({ action: 'project.create' }, 20)
    await api.statsUsage({ since: '2026-01-01T00:00:00.000Z', until: '2026-01-02T00:00:00.000Z', bucket_secs: 3600, group: 'model' })
    const q = calls.map((c) => new URL(c.url, 'http://x').searchParams)
    expect(Object.fromEntries(q[0]!)).toEqual({ project: 'team-a', model: 'gpt-4o-mini', since: '24h', limit: '50', cursor: 'c1' })
    expect(Object.fromEntries(q[1]!)).toEqual({ action: 'project.create', limit: '20' })
    expect(Object.fromEntries(q[2]!)).toEqual({
      since: '2026-01-01T00:00:00.000Z',
      until: '2026-01-02T00:00:00.000Z',
      bucket_secs: '3600',
      group: 'model',
    })
  })

  it('builds the CSV export link from the filters', () => {
    expect(usageCsvUrl({})).toBe('/v1/usage?format=csv')
    expect(usageCsvUrl({ project: 'team a', token: 'tok_1', since: '2026-01-01T00:00:00Z', model: '' })).toBe(
      '/v1/usage?format=csv&project=team+a&token=tok_1&since=2026-01-01T00%3A00%3A00Z',
    )
  })
})

describe('errors', () => {
  it('parses the error body into a typed ApiError', async () => {
    mockApi({
      'POST /v1/projects': {
        status: 409,
        body: { error: { type: 'invalid_request_error', message: 'project `a` already exists', code: 'conflict' } },
      },
    })
    const err = await api.createProject({ name: 'a' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(err).toMatchObject({ status: 409, type: 'invalid_request_error', code: 'conflict', message: 'project `a` already exists' })
  })

  it('falls back to the status for bodies that are not the error shape', () => {
    expect(parseErrorBody(502, '<html>bad gateway</html>')).toMatchObject({ status: 502, code: 'http_502', message: 'HTTP 502' })
    expect(parseErrorBody(500, '{"error":"x"}')).toMatchObject({ status: 500, code: 'http_500' })
  })

  it('turns network failures into an ApiError with status 0', async () => {
    setFetch((async () => {
      throw new TypeError('Failed to fetch')
    }) as typeof fetch)
    await expect(api.listProjects()).rejects.toMatchObject({ status: 0, code: 'network_error' })
  })

  it('reports an expired session (401) except for the sign-in calls', async () => {
    const handler = vi.fn()
    onUnauthorized(handler)
    const unauthorized = { status: 401, body: { error: { type: 'authentication_error', message: 'no session', code: 'unauthorized' } } }
    mockApi({ 'GET /v1/projects': unauthorized, 'POST /v1/session': unauthorized, 'GET /v1/session': unauthorized })
    await expect(api.signIn('bad')).rejects.toMatchObject({ status: 401 })
    await expect(api.session()).rejects.toMatchObject({ status: 401 })
    expect(handler).not.toHaveBeenCalled()
    await expect(api.listProjects()).rejects.toMatchObject({ status: 401, message: 'no session' })
    expect(handler).toHaveBeenCalledTimes(1)
  })
})

describe('endpoint table', () => {
  it('holds every call the client makes', () => {
    expect(Object.keys(ENDPOINTS).length).toBeGreaterThanOrEqual(20)
    for (const ep of Object.values(ENDPOINTS)) expect(ep.path.startsWith('/v1/')).toBe(true)
  })
})

describe('query parameters', () => {
  it('refuses undeclared query parameters before any request', async () => {
    const calls = mockApi({})
    const { request } = await import('../src/api/client')
    await expect(request('listProjects', { query: { bogus: 1 } })).rejects.toThrow(/bogus/)
    expect(calls).toHaveLength(0)
  })
})
