// Role-aware pages, empty and error states, sign-in.
import { flushPromises } from '@vue/test-utils'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { live } from '../src/api/events'
import { setFetch } from '../src/api/client'
import { session, setSession } from '../src/session'
import TokensPage from '../src/pages/TokensPage.vue'
import ProjectsPage from '../src/pages/ProjectsPage.vue'
import ProjectDetail from '../src/pages/ProjectDetail.vue'
import ProvidersPage from '../src/pages/ProvidersPage.vue'
import OverviewPage from '../src/pages/OverviewPage.vue'
import AuditPage from '../src/pages/AuditPage.vue'
import SignIn from '../src/pages/SignIn.vue'
import { asRole, budget, mockApi, mountPage, project, token } from './helpers'

afterEach(() => {
  setFetch(null)
  setSession(null)
  document.body.innerHTML = ''
})

const provider = {
  id: 'prv_1',
  name: 'openai',
  kind: 'openai',
  base_url: 'https://api.openai.com',
  models: ['gpt-4o*'],
  priority: 0,
  api_key_masked: 'sk-…abc',
  timeouts: { connect_ms: null, first_byte_ms: null, idle_ms: null },
  created_at: '2026-01-01T00:00:00Z',
  updated_at: '2026-01-01T00:00:00Z',
  breakers: [{ proxy: 'px_1', state: 'open', updated_at: '2026-01-01T00:00:00Z' }],
}

function tokenApi() {
  return mockApi({
    'GET /v1/projects': { body: { data: [project('prj_1', 'team-a')], next_cursor: null } },
    'GET /v1/projects/prj_1/tokens': { body: { data: [token('tok_1'), token('tok_2', 'revoked')], next_cursor: null } },
    'DELETE /v1/tokens/tok_1': { body: token('tok_1', 'revoked') },
    'GET /v1/budgets/prj_1': { body: budget('prj_1', 0) },
  })
}

describe('role-aware mutation buttons', () => {
  it('admin sees mint and revoke (active tokens only)', async () => {
    asRole('admin')
    tokenApi()
    const w = await mountPage(TokensPage)
    expect(w.find('[data-testid="mint-token"]').exists()).toBe(true)
    expect(w.find('[data-testid="revoke-tok_1"]').exists()).toBe(true)
    expect(w.find('[data-testid="revoke-tok_2"]').exists()).toBe(false)
    expect(w.get('[data-testid="token-status-tok_2"]').text()).toBe('revoked')
    w.unmount()
  })

  it('viewer sees tokens but no mint or revoke', async () => {
    asRole('viewer')
    tokenApi()
    const w = await mountPage(TokensPage)
    expect(w.find('[data-testid="tokens-table"]').exists()).toBe(true)
    expect(w.find('[data-testid="mint-token"]').exists()).toBe(false)
    expect(w.findAll('button').filter((b) => /revoke/i.test(b.text()))).toHaveLength(0)
    w.unmount()
  })

  it('viewer sees no create-project form, no budget/policy edits and no provider actions', async () => {
    asRole('viewer')
    mockApi({
      'GET /v1/projects': { body: { data: [project('prj_1', 'team-a')], next_cursor: null } },
      'GET /v1/projects/prj_1': { body: project('prj_1', 'team-a') },
      'GET /v1/budgets/prj_1': { body: budget('prj_1', 0) },
      'GET /v1/providers': { body: { data: [provider], next_cursor: null } },
    })
    const list = await mountPage(ProjectsPage)
    expect(list.find('[data-testid="create-project"]').exists()).toBe(false)
    expect(list.find('[data-testid="budget-bar-prj_1"]').exists()).toBe(true)
    list.unmount()
    const detail = await mountPage(ProjectDetail, { props: { id: 'prj_1' } })
    expect(detail.find('[data-testid="save-budget"]').exists()).toBe(false)
    expect(detail.find('[data-testid="save-policy"]').exists()).toBe(false)
    expect(detail.findAll('select')).toHaveLength(0)
    detail.unmount()
    const prov = await mountPage(ProvidersPage)
    expect(prov.find('[data-testid="providers-table"]').exists()).toBe(true)
    expect(prov.find('[data-testid="rotate-openai"]').exists()).toBe(false)
    expect(prov.find('[data-testid="delete-provider-openai"]').exists()).toBe(false)
    expect(prov.find('[data-testid="add-provider"]').exists()).toBe(false)
    prov.unmount()
  })

  it('admin sees the create, edit and provider actions; keys are masked and breakers shown', async () => {
    asRole('admin')
    mockApi({
      'GET /v1/projects': { body: { data: [project('prj_1', 'team-a')], next_cursor: null } },
      'GET /v1/projects/prj_1': { body: project('prj_1', 'team-a') },
      'GET /v1/budgets/prj_1': { body: budget('prj_1', 0) },
      'GET /v1/providers': { body: { data: [provider], next_cursor: null } },
    })
    const list = await mountPage(ProjectsPage)
    expect(list.find('[data-testid="create-project"]').exists()).toBe(true)
    list.unmount()
    const detail = await mountPage(ProjectDetail, { props: { id: 'prj_1' } })
    expect(detail.find('[data-testid="save-budget"]').exists()).toBe(true)
    detail.unmount()
    const prov = await mountPage(ProvidersPage)
    expect(prov.find('[data-testid="rotate-openai"]').exists()).toBe(true)
    expect(prov.get('[data-testid="provider-key"]').attributes('type')).toBe('password')
    expect(prov.text()).toContain('sk-…abc')
    expect(prov.get('[data-testid="provider-row-openai"]').text()).toContain('open')
    prov.unmount()
  })

  it('a project key gets mint/revoke for its own project', async () => {
    asRole('project', 'prj_1')
    tokenApi()
    const w = await mountPage(TokensPage)
    expect((w.get('[data-testid="tokens-project"]').element as HTMLSelectElement).value).toBe('prj_1')
    expect(w.find('[data-testid="mint-token"]').exists()).toBe(true)
    w.unmount()
  })
})

describe('revoke', () => {
  it('asks for confirmation, then calls DELETE and refreshes', async () => {
    asRole('admin')
    const calls = tokenApi()
    const w = await mountPage(TokensPage)
    await w.get('[data-testid="revoke-tok_1"]').trigger('click')
    expect(calls.some((c) => c.method === 'DELETE')).toBe(false)
    expect(document.querySelector('[data-testid="confirm-dialog"]')).not.toBeNull()
    ;(document.querySelector('[data-testid="confirm-yes"]') as HTMLButtonElement).click()
    await flushPromises()
    expect(calls.filter((c) => c.method === 'DELETE').map((c) => c.url)).toEqual(['/v1/tokens/tok_1'])
    expect(w.get('[data-testid="tokens-notice"]').text()).toContain('tok_1 revoked')
    w.unmount()
  })
})

describe('empty and error states', () => {
  it('says when a project has no tokens', async () => {
    asRole('admin')
    mockApi({
      'GET /v1/projects': { body: { data: [project('prj_1', 'team-a')], next_cursor: null } },
      'GET /v1/projects/prj_1/tokens': { body: { data: [], next_cursor: null } },
    })
    const w = await mountPage(TokensPage)
    expect(w.get('[data-testid="tokens-empty"]').text()).toBe('No tokens yet.')
    w.unmount()
  })

  it('shows the API error message in an alert', async () => {
    asRole('admin')
    mockApi({
      'GET /v1/projects': { body: { data: [project('prj_1', 'team-a')], next_cursor: null } },
      'GET /v1/projects/prj_1/tokens': {
        status: 503,
        body: { error: { type: 'api_error', message: 'store unavailable', code: 'unavailable' } },
      },
    })
    const w = await mountPage(TokensPage)
    const alert = w.get('[role="alert"]')
    expect(alert.text()).toBe('store unavailable')
    expect(w.find('[data-testid="tokens-empty"]').exists()).toBe(false)
    w.unmount()
  })

  it('overview shows figures, budgets, and a stats error without hiding budgets', async () => {
    asRole('admin')
    mockApi({
      'GET /v1/projects': { body: { data: [project('prj_1', 'a'), project('prj_2', 'b')], next_cursor: null } },
      'GET /v1/budgets/prj_1': { body: budget('prj_1', 300_000) },
      'GET /v1/budgets/prj_2': { body: budget('prj_2', 200_000, 0, null) },
      'GET /v1/stats/overview': { status: 500, body: { error: { type: 'api_error', message: 'boom', code: 'internal' } } },
    })
    const w = await mountPage(OverviewPage)
    expect(w.get('[data-testid="overview-spend-period"]').text()).toBe('$0.50')
    expect(w.get('[data-testid="overview-stats-error"]').text()).toContain('boom')
    expect(w.find('[data-testid="budget-bar-prj_1"]').exists()).toBe(true)
    w.unmount()
  })

  it('overview renders the stats', async () => {
    asRole('admin')
    mockApi({
      'GET /v1/projects': { body: { data: [], next_cursor: null } },
      'GET /v1/stats/overview': {
        body: { now_ms: 1, spend_today_microdollars: 1_250_000, requests_per_minute: 2.5, error_rate: 0.2, p99_overhead_ms: 1.234, series: [] },
      },
    })
    const w = await mountPage(OverviewPage)
    expect(w.get('[data-testid="overview-spend-today"]').text()).toBe('$1.25')
    expect(w.get('[data-testid="overview-requests-per-minute"]').text()).toBe('2.5')
    expect(w.get('[data-testid="overview-error-rate"]').text()).toBe('20.0%')
    expect(w.get('[data-testid="overview-p99-overhead"]').text()).toBe('1.23 ms')
    expect(w.text()).toContain('No projects yet.')
    w.unmount()
  })

  it('audit log lists events and pages with the cursor', async () => {
    asRole('admin')
    const ev = (id: string, action: string) => ({ id, time: 't', actor: 'ak_1', action, target: 'prj_1', project: 'prj_1', request_id: 'r', details: {} })
    const calls = mockApi({
      'GET /v1/audit?limit=50': { body: { data: [ev('a1', 'project.create')], next_cursor: 'c2' } },
      'GET /v1/audit?limit=50&cursor=c2': { body: { data: [ev('a2', 'token.mint')], next_cursor: null } },
    })
    const w = await mountPage(AuditPage)
    expect(w.find('[data-testid="audit-row-project.create"]').exists()).toBe(true)
    const next = w.findAll('button').find((b) => b.text() === 'Next page')!
    await next.trigger('click')
    await flushPromises()
    expect(calls.map((c) => c.url)).toEqual(['/v1/audit?limit=50', '/v1/audit?limit=50&cursor=c2'])
    expect(w.find('[data-testid="audit-row-token.mint"]').exists()).toBe(true)
    w.unmount()
  })
})

describe('sign-in form', () => {
  it('explains a 429 (too many failures)', async () => {
    mockApi({ 'POST /v1/session': { status: 429, body: { error: { type: 'rate_limit_error', message: 'too many failed sign-ins; retry in 60 s', code: 'rate_limited' } } } })
    const w = await mountPage(SignIn)
    await w.get('[data-testid="signin-key"]').setValue('iron_ak_bad')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[role="alert"]').text()).toBe('Too many failed attempts: too many failed sign-ins; retry in 60 s')
    w.unmount()
  })

  it('signs out with DELETE /v1/session and forgets the session', async () => {
    asRole('admin')
    const calls = mockApi({ 'DELETE /v1/session': { status: 204 } })
    const { signOut } = await import('../src/session')
    await signOut()
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual(['DELETE /v1/session'])
    expect(session.value).toBeNull()
  })

  it('has a labelled key field, posts the key and clears it', async () => {
    const calls = mockApi({ 'POST /v1/session': { body: { key_id: 'ak_1', role: 'viewer', project: null } } })
    const w = await mountPage(SignIn)
    const input = w.get('[data-testid="signin-key"]')
    expect(input.attributes('type')).toBe('password')
    expect(document.querySelector(`label[for="${input.attributes('id')}"]`)?.textContent).toBe('API key')
    await input.setValue('iron_ak_abc')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(calls[0]).toMatchObject({ method: 'POST', url: '/v1/session', body: { api_key: 'iron_ak_abc' } })
    expect(session.value).toEqual({ key_id: 'ak_1', role: 'viewer', project: null })
    expect((input.element as HTMLInputElement).value).toBe('')
    expect(JSON.stringify(localStorage)).not.toContain('iron_ak_abc')
    expect(JSON.stringify(sessionStorage)).not.toContain('iron_ak_abc')
    w.unmount()
  })

  it('shows the error of a rejected key', async () => {
    mockApi({ 'POST /v1/session': { status: 401, body: { error: { type: 'authentication_error', message: 'invalid API key', code: 'invalid_api_key' } } } })
    const w = await mountPage(SignIn)
    await w.get('[data-testid="signin-key"]').setValue('iron_ak_bad')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[role="alert"]').text()).toBe('Sign-in failed: invalid API key')
    expect(session.value).toBeNull()
    w.unmount()
  })
})

describe('live refresh', () => {
  it('refetches once, 250 ms after a burst of events, while the page is mounted', async () => {
    asRole('admin')
    const calls = tokenApi()
    const w = await mountPage(TokensPage)
    const lists = () => calls.filter((c) => c.url.startsWith('/v1/projects/prj_1/tokens')).length
    expect(lists()).toBe(1)
    vi.useFakeTimers()
    try {
      live.emit('usage')
      live.emit('usage')
      live.emit('token_revoked')
      vi.advanceTimersByTime(249)
      expect(lists()).toBe(1)
      vi.advanceTimersByTime(1)
      expect(lists()).toBe(2)
      w.unmount()
      live.emit('usage')
      vi.advanceTimersByTime(1000)
      expect(lists()).toBe(2)
    } finally {
      vi.useRealTimers()
    }
  })
})

describe('forms', () => {
  it('creates a project with name, budget and period, then opens it', async () => {
    asRole('admin')
    const calls = mockApi({
      'GET /v1/projects': { body: { data: [], next_cursor: null } },
      'POST /v1/projects': { status: 201, body: project('prj_9', 'team-b') },
    })
    const w = await mountPage(ProjectsPage)
    expect(w.text()).toContain('No projects yet.')
    await w.get('[data-testid="project-name"]').setValue('team-b')
    await w.get('[data-testid="project-budget"]').setValue('12.5')
    await w.get('[data-testid="project-period"]').setValue('monthly')
    await w.get('[data-testid="create-project-form"]').trigger('submit')
    await flushPromises()
    const post = calls.find((c) => c.method === 'POST')
    expect(post).toMatchObject({ url: '/v1/projects', body: { name: 'team-b', budget_usd: '12.5', period: 'monthly' } })
    w.unmount()
  })

  it('rejects a malformed budget without calling the API', async () => {
    asRole('admin')
    const calls = mockApi({ 'GET /v1/projects': { body: { data: [], next_cursor: null } } })
    const w = await mountPage(ProjectsPage)
    await w.get('[data-testid="project-name"]').setValue('team-b')
    await w.get('[data-testid="project-budget"]').setValue('$12')
    await w.get('[data-testid="create-project-form"]').trigger('submit')
    await flushPromises()
    expect(calls.some((c) => c.method === 'POST')).toBe(false)
    expect(w.get('[data-testid="create-project-error"]').text()).toContain('USD amount')
    w.unmount()
  })

  it('adds a provider with a write-only key and clears the key field afterwards', async () => {
    asRole('admin')
    const calls = mockApi({
      'GET /v1/providers': { body: { data: [], next_cursor: null } },
      'POST /v1/providers': { status: 201, body: { ...provider, name: 'mock' } },
    })
    const w = await mountPage(ProvidersPage)
    expect(w.text()).toContain('No providers yet.')
    await w.get('[data-testid="provider-name"]').setValue('mock')
    await w.get('[data-testid="provider-kind"]').setValue('openai-compatible')
    await w.get('[data-testid="provider-url"]').setValue('http://127.0.0.1:9999')
    await w.get('[data-testid="provider-models"]').setValue('gpt-4o*, o3*')
    await w.get('[data-testid="provider-priority"]').setValue('5')
    await w.get('[data-testid="provider-key"]').setValue('sk-secret-123')
    await w.get('[data-testid="add-provider-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({
      name: 'mock',
      kind: 'openai-compatible',
      base_url: 'http://127.0.0.1:9999',
      api_key: 'sk-secret-123',
      models: ['gpt-4o*', 'o3*'],
      priority: 5,
    })
    expect((w.get('[data-testid="provider-key"]').element as HTMLInputElement).value).toBe('')
    expect(w.html()).not.toContain('sk-secret-123')
    w.unmount()
  })

  it('edits the PII policy and allowed models of a project', async () => {
    asRole('admin')
    const calls = mockApi({
      'GET /v1/projects/prj_1': { body: project('prj_1', 'team-a') },
      'GET /v1/budgets/prj_1': { body: budget('prj_1', 0) },
      'PATCH /v1/projects/prj_1': { body: project('prj_1', 'team-a') },
      'PUT /v1/projects/prj_1/budget': { body: project('prj_1', 'team-a') },
    })
    const w = await mountPage(ProjectDetail, { props: { id: 'prj_1' } })
    await w.get('#pii-request-EMAIL').setValue('block')
    await w.get('#pii-reversible').setValue(false)
    await w.get('[data-testid="edit-models"]').setValue('gpt-4o*')
    await w.get('[data-testid="pii-form"]').trigger('submit')
    await flushPromises()
    const patch = calls.find((c) => c.method === 'PATCH')!.body as { pii: { request: Record<string, string>; reversible: boolean }; allowed_models: string[] }
    expect(patch.pii.request.EMAIL).toBe('block')
    expect(patch.pii.request.PHONE).toBe('redact')
    expect(patch.pii.reversible).toBe(false)
    expect(patch.allowed_models).toEqual(['gpt-4o*'])

    await w.get('[data-testid="edit-budget"]').setValue('')
    await w.get('[data-testid="edit-period"]').setValue('daily')
    await w.get('[data-testid="edit-budget-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'PUT')?.body).toEqual({ budget_usd: null, period: 'daily' })
    w.unmount()
  })
})

describe('provider timeouts', () => {
  const timed = {
    ...provider,
    id: 'prv_2',
    name: 'anthropic',
    kind: 'anthropic',
    timeouts: { connect_ms: 5000, first_byte_ms: 30000, idle_ms: 60000 },
  }
  const partial = { ...provider, id: 'prv_3', name: 'azure', timeouts: { connect_ms: 1500, first_byte_ms: null, idle_ms: null } }

  it('shows each provider\'s timeouts, or proxy defaults when none is set', async () => {
    asRole('viewer')
    const { timeouts: _omitted, ...legacy } = { ...provider, id: 'prv_4', name: 'legacy' }
    mockApi({ 'GET /v1/providers': { body: { data: [provider, timed, partial, legacy], next_cursor: null } } })
    const w = await mountPage(ProvidersPage)
    expect(w.get('[data-testid="providers-table"] thead').text()).toContain('Timeouts')
    expect(w.get('[data-testid="provider-timeouts-openai"]').text()).toBe('proxy defaults')
    expect(w.get('[data-testid="provider-timeouts-anthropic"]').text()).toBe('connect 5 s · first byte 30 s · idle 60 s')
    expect(w.get('[data-testid="provider-timeouts-azure"]').text()).toBe('connect 1.5 s · first byte default · idle default')
    expect(w.get('[data-testid="provider-timeouts-legacy"]').text()).toBe('proxy defaults')
    expect(w.get('[data-testid="provider-timeouts-anthropic"]').attributes('title')).toContain('connect_ms: 5000')
    // Viewers cannot edit.
    expect(w.find('[data-testid="edit-timeouts-openai"]').exists()).toBe(false)
    w.unmount()
  })

  it('the add form sends the set timeouts and omits the empty ones', async () => {
    asRole('admin')
    const calls = mockApi({
      'GET /v1/providers': { body: { data: [], next_cursor: null } },
      'POST /v1/providers': { status: 201, body: { ...timed, name: 'mock' } },
    })
    const w = await mountPage(ProvidersPage)
    await w.get('[data-testid="provider-name"]').setValue('mock')
    await w.get('[data-testid="provider-url"]').setValue('http://127.0.0.1:9999')
    await w.get('[data-testid="provider-key"]').setValue('sk-secret-123')
    await w.get('[data-testid="provider-connect-ms"]').setValue('5000')
    await w.get('[data-testid="provider-idle-ms"]').setValue('600000')
    await w.get('[data-testid="add-provider-form"]').trigger('submit')
    await flushPromises()
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({
      name: 'mock',
      kind: 'openai',
      base_url: 'http://127.0.0.1:9999',
      api_key: 'sk-secret-123',
      priority: 0,
      timeouts: { connect_ms: 5000, idle_ms: 600000 },
    })
    // The form is reset, timeouts included.
    expect((w.get('[data-testid="provider-connect-ms"]').element as HTMLInputElement).value).toBe('')
    w.unmount()
  })

  it.each([
    ['provider-first-byte-ms', '600001', 'First-byte timeout'],
    ['provider-connect-ms', '0', 'Connect timeout'],
    ['provider-idle-ms', '2.5', 'Idle timeout'],
  ])('the add form rejects %s = %s without calling the API', async (field, value, label) => {
    asRole('admin')
    const calls = mockApi({ 'GET /v1/providers': { body: { data: [], next_cursor: null } } })
    const w = await mountPage(ProvidersPage)
    await w.get('[data-testid="provider-name"]').setValue('mock')
    await w.get('[data-testid="provider-url"]').setValue('http://127.0.0.1:9999')
    await w.get('[data-testid="provider-key"]').setValue('sk-secret-123')
    await w.get(`[data-testid="${field}"]`).setValue(value)
    await w.get('[data-testid="add-provider-form"]').trigger('submit')
    await flushPromises()
    expect(calls.some((c) => c.method === 'POST')).toBe(false)
    const err = w.get('[data-testid="add-provider-error"]').text()
    expect(err).toContain(label)
    expect(err).toContain('from 1 to 600000')
    w.unmount()
  })

  it('the edit dialog PATCHes the changed timeouts, a cleared one as null', async () => {
    asRole('admin')
    const calls = mockApi({
      'GET /v1/providers': { body: { data: [timed], next_cursor: null } },
      'PATCH /v1/providers/prv_2': { body: { ...timed, timeouts: { connect_ms: null, first_byte_ms: 45000, idle_ms: 60000 } } },
    })
    const w = await mountPage(ProvidersPage)
    await w.get('[data-testid="edit-timeouts-anthropic"]').trigger('click')
    await flushPromises()
    const dialog = w.get('[data-testid="timeouts-dialog"]')
    expect((dialog.get('[data-testid="edit-connect-ms"]').element as HTMLInputElement).value).toBe('5000')
    expect((dialog.get('[data-testid="edit-idle-ms"]').element as HTMLInputElement).value).toBe('60000')
    await dialog.get('[data-testid="edit-connect-ms"]').setValue('')
    await dialog.get('[data-testid="edit-first-byte-ms"]').setValue('45000')
    await dialog.get('[data-testid="timeouts-form"]').trigger('submit')
    await flushPromises()
    const patch = calls.find((c) => c.method === 'PATCH')
    expect(patch?.url).toBe('/v1/providers/prv_2')
    // idle_ms unchanged: not sent, so the server keeps it.
    expect(patch?.body).toEqual({ timeouts: { connect_ms: null, first_byte_ms: 45000 } })
    expect(w.find('[data-testid="timeouts-dialog"]').exists()).toBe(false)
    expect(w.text()).toContain('Timeouts of anthropic updated.')
    // The list was reloaded after the change.
    expect(calls.filter((c) => c.method === 'GET' && c.url.startsWith('/v1/providers')).length).toBe(2)
    w.unmount()
  })

  it('the edit dialog rejects an out-of-range timeout without calling the API', async () => {
    asRole('admin')
    const calls = mockApi({ 'GET /v1/providers': { body: { data: [timed], next_cursor: null } } })
    const w = await mountPage(ProvidersPage)
    await w.get('[data-testid="edit-timeouts-anthropic"]').trigger('click')
    await flushPromises()
    await w.get('[data-testid="edit-idle-ms"]').setValue('700000')
    await w.get('[data-testid="timeouts-form"]').trigger('submit')
    await flushPromises()
    expect(calls.some((c) => c.method === 'PATCH')).toBe(false)
    expect(w.get('[data-testid="timeouts-error"]').text()).toContain('Idle timeout')
    expect(w.find('[data-testid="timeouts-dialog"]').exists()).toBe(true)
    w.unmount()
  })
})
