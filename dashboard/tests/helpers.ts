// Test helpers: a fetch mock that records calls and answers from a route table, and a
// mount helper with a memory router.
import { enableAutoUnmount, flushPromises, mount } from '@vue/test-utils'
import { afterEach } from 'vitest'
import { createMemoryHistory, createRouter } from 'vue-router'
import type { Component } from 'vue'
import { setFetch } from '../src/api/client'
import { setSession } from '../src/session'
import type { Session } from '../src/api/types'

export interface Call {
  method: string
  url: string
  body: unknown
  credentials: RequestCredentials | undefined
}

// A failed assertion must not leave a page mounted (and subscribed to live events).
enableAutoUnmount(afterEach)

type Reply = { status?: number; body?: unknown; text?: string }
type Handler = Reply | ((call: Call) => Reply)

/** Routes are `"METHOD /path"` (query ignored unless the key contains `?`). */
export function mockApi(routes: Record<string, Handler>) {
  const calls: Call[] = []
  const f = async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input)
    const method = init?.method ?? 'GET'
    const body = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined
    const call = { method, url, body, credentials: init?.credentials }
    calls.push(call)
    const path = url.split('?')[0]
    const h = routes[`${method} ${url}`] ?? routes[`${method} ${path}`]
    const r: Reply = h === undefined ? { status: 404, body: { error: { type: 'not_found', message: `no mock for ${method} ${url}`, code: 'not_found' } } } : typeof h === 'function' ? h(call) : h
    const status = r.status ?? 200
    const text = r.text ?? (r.body === undefined ? '' : JSON.stringify(r.body))
    return new Response(status === 204 ? null : text, { status })
  }
  setFetch(f as typeof fetch)
  return calls
}

export function asRole(role: Session['role'], project: string | null = null) {
  setSession({ key_id: 'ak_test', role, project })
}

export async function mountPage(component: Component, opts: { query?: Record<string, string>; props?: Record<string, unknown> } = {}) {
  const router = createRouter({
    history: createMemoryHistory(),
    routes: [{ path: '/:rest(.*)*', component: { template: '<div />' } }],
  })
  await router.push({ path: '/', query: opts.query ?? {} })
  await router.isReady()
  const wrapper = mount(component, {
    props: opts.props,
    global: { plugins: [router], stubs: { TimeChart: true } },
    attachTo: document.body,
  })
  await flushPromises()
  await flushPromises()
  return wrapper
}

export const project = (id: string, name: string, extra: Record<string, unknown> = {}) => ({
  id,
  name,
  budget_usd: '1',
  period: 'total',
  providers: [],
  allowed_models: [],
  pii: null,
  created_at: '2026-01-01T00:00:00Z',
  updated_at: '2026-01-01T00:00:00Z',
  ...extra,
})

export const token = (id: string, status = 'active', extra: Record<string, unknown> = {}) => ({
  id,
  project: 'prj_1',
  name: null,
  budget_usd: null,
  period: 'total',
  kid: 'k1',
  status,
  created_at: '2026-01-01T00:00:00Z',
  expires_at: '2027-01-01T00:00:00Z',
  revoked_at: null,
  last_used_at: null,
  spent_usd: '0',
  spent_microdollars: 0,
  ...extra,
})

export const budget = (projectId: string, spent: number, leased = 0, limit: number | null = 1_000_000) => ({
  project: projectId,
  project_name: projectId,
  period: 'total',
  limit_usd: limit === null ? null : String(limit / 1e6),
  spent_usd: String(spent / 1e6),
  leased_usd: String(leased / 1e6),
  remaining_usd: null,
  limit_microdollars: limit,
  spent_microdollars: spent,
  leased_microdollars: leased,
  remaining_microdollars: limit === null ? null : Math.max(0, limit - spent - leased),
  active_leases: 0,
})
