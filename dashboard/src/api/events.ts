// Live updates: one EventSource on `/v1/events` (cookie-authenticated, same origin). Any
// event (`usage`, `token_revoked`, `config_changed`) tells the mounted pages to refetch,
// debounced so a burst of usage reports causes one refetch. Reconnects with backoff.

import { onMounted, onUnmounted } from 'vue'
import { ENDPOINTS } from './client'

export const EVENT_NAMES = ['usage', 'token_revoked', 'config_changed'] as const
export const DEBOUNCE_MS = 250

export interface Timers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (id: unknown) => void
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id as ReturnType<typeof setTimeout>),
}

/** Trailing-edge debounce: `fn` runs once, `ms` after the last trigger. */
export function debounce(fn: () => void, ms = DEBOUNCE_MS, timers: Timers = realTimers) {
  let pending: unknown = null
  const trigger = () => {
    if (pending !== null) timers.clearTimeout(pending)
    pending = timers.setTimeout(() => {
      pending = null
      fn()
    }, ms)
  }
  trigger.cancel = () => {
    if (pending !== null) timers.clearTimeout(pending)
    pending = null
  }
  return trigger
}

/** Reconnect delay after `attempt` consecutive failures: 1 s doubling to 30 s. */
export function backoffMs(attempt: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, Math.min(attempt, 5)))
}

type Listener = (event: string) => void

interface EventSourceLike {
  onopen: ((this: EventSource, ev: Event) => unknown) | null
  onerror: ((this: EventSource, ev: Event) => unknown) | null
  addEventListener(type: string, fn: (ev: MessageEvent) => void): void
  close(): void
}

/** The shared live connection. Opened after sign-in, closed on sign-out. */
export class LiveEvents {
  private source: EventSourceLike | null = null
  private listeners = new Set<Listener>()
  private attempt = 0
  private retry: unknown = null
  private running = false
  /** Called on every connection error (session.ts re-checks the session: expired → stop). */
  onDisconnect: (() => void) | null = null

  constructor(
    private readonly open: (url: string) => EventSourceLike | null = (url) =>
      typeof EventSource === 'undefined' ? null : new EventSource(url, { withCredentials: true }),
    private readonly timers: Timers = realTimers,
  ) {}

  start(): void {
    if (this.running) return
    this.running = true
    this.connect()
  }

  stop(): void {
    this.running = false
    if (this.retry !== null) this.timers.clearTimeout(this.retry)
    this.retry = null
    this.source?.close()
    this.source = null
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /** Delivers an event to every subscriber (also used by tests). */
  emit(name: string): void {
    for (const l of [...this.listeners]) l(name)
  }

  private connect(): void {
    if (!this.running) return
    const src = this.open(ENDPOINTS.events.path)
    if (!src) {
      this.running = false
      return
    }
    this.source = src
    src.onopen = () => {
      this.attempt = 0
    }
    src.onerror = () => {
      // EventSource retries by itself on network errors but gives up on HTTP errors; take
      // over in both cases with our own backoff.
      src.close()
      if (this.source !== src || !this.running) return
      this.source = null
      this.onDisconnect?.()
      if (!this.running) return
      const delay = backoffMs(this.attempt++)
      this.retry = this.timers.setTimeout(() => {
        this.retry = null
        this.connect()
      }, delay)
    }
    for (const name of EVENT_NAMES) src.addEventListener(name, () => this.emit(name))
    src.addEventListener('message', () => this.emit('message'))
  }
}

export const live = new LiveEvents()

/**
 * Runs `refetch` (debounced) whenever a live event arrives while the calling component is
 * mounted. Project-scoped keys cannot open `/v1/events`; `pollMs` adds a slow poll as a
 * fallback for them.
 */
export function useLiveRefresh(refetch: () => void, pollMs = 0): void {
  const d = debounce(refetch)
  let unsub: (() => void) | null = null
  let poll: ReturnType<typeof setInterval> | null = null
  onMounted(() => {
    unsub = live.subscribe(() => d())
    if (pollMs > 0) poll = setInterval(refetch, pollMs)
  })
  onUnmounted(() => {
    unsub?.()
    d.cancel()
    if (poll !== null) clearInterval(poll)
  })
}
