// Who is signed in: the session the control API reports for our cookie, and what that role
// may do. The API key itself is never kept here (only the sign-in form holds it briefly).

import { computed, ref } from 'vue'
import { ApiError, api, onUnauthorized } from './api/client'
import { live } from './api/events'
import type { Session } from './api/types'

export const session = ref<Session | null>(null)
/** `true` once `GET /v1/session` has answered (signed in or not). */
export const sessionChecked = ref(false)

/** Admin keys may change projects, providers and budgets. */
export const isAdmin = computed(() => session.value?.role === 'admin')
/** Admin and project keys may mint and revoke tokens (project keys: their own project). */
export const canManageTokens = computed(
  () => session.value?.role === 'admin' || session.value?.role === 'project',
)
/** Admin and viewer keys see every project, providers and the audit log. */
export const isGlobalReader = computed(
  () => session.value?.role === 'admin' || session.value?.role === 'viewer',
)

function startLive(s: Session | null): void {
  // `/v1/events` needs a global reader; project keys fall back to polling.
  if (s && s.role !== 'project') live.start()
  else live.stop()
}

export function setSession(s: Session | null): void {
  session.value = s
  sessionChecked.value = true
  startLive(s)
}

export async function loadSession(): Promise<Session | null> {
  try {
    setSession(await api.session())
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) {
      sessionChecked.value = true
      throw e
    }
    setSession(null)
  }
  return session.value
}

export async function signIn(apiKey: string): Promise<Session> {
  const s = await api.signIn(apiKey)
  setSession(s)
  return s
}

export async function signOut(): Promise<void> {
  try {
    await api.signOut()
  } finally {
    setSession(null)
  }
}

onUnauthorized(() => setSession(null))

// A dropped event stream may mean the session expired: ask, and sign out locally on 401
// (which also stops the reconnect loop).
live.onDisconnect = () => {
  if (session.value) void loadSession().catch(() => undefined)
}
