import { afterEach, describe, expect, it, vi } from 'vitest'
import { LiveEvents, backoffMs, debounce } from '../src/api/events'

afterEach(() => vi.useRealTimers())

class FakeSource {
  static all: FakeSource[] = []
  onopen: (() => void) | null = null
  onerror: (() => void) | null = null
  closed = false
  listeners = new Map<string, ((ev: MessageEvent) => void)[]>()
  constructor(readonly url: string) {
    FakeSource.all.push(this)
  }
  addEventListener(type: string, fn: (ev: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn])
  }
  fire(type: string) {
    for (const fn of this.listeners.get(type) ?? []) fn(new MessageEvent(type, { data: '{}' }))
  }
  close() {
    this.closed = true
  }
}

const timers = {
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (id: unknown) => clearTimeout(id as ReturnType<typeof setTimeout>),
}

describe('debounce', () => {
  it('runs once, 250 ms after the last of a burst', () => {
    vi.useFakeTimers()
    const fn = vi.fn()
    const d = debounce(fn, 250, timers)
    d()
    vi.advanceTimersByTime(200)
    d()
    vi.advanceTimersByTime(200)
    d()
    expect(fn).not.toHaveBeenCalled()
    vi.advanceTimersByTime(249)
    expect(fn).not.toHaveBeenCalled()
    vi.advanceTimersByTime(1)
    expect(fn).toHaveBeenCalledTimes(1)
    d()
    vi.advanceTimersByTime(250)
    expect(fn).toHaveBeenCalledTimes(2)
  })

  it('can be cancelled', () => {
    vi.useFakeTimers()
    const fn = vi.fn()
    const d = debounce(fn, 250, timers)
    d()
    d.cancel()
    vi.advanceTimersByTime(1000)
    expect(fn).not.toHaveBeenCalled()
  })
})

describe('LiveEvents', () => {
  it('delivers usage, token_revoked and config_changed events to subscribers', () => {
    FakeSource.all = []
    const live = new LiveEvents((url) => new FakeSource(url) as never, timers)
    const seen: string[] = []
    const unsub = live.subscribe((e) => seen.push(e))
    live.start()
    expect(FakeSource.all).toHaveLength(1)
    expect(FakeSource.all[0]!.url).toBe('/v1/events')
    FakeSource.all[0]!.fire('usage')
    FakeSource.all[0]!.fire('token_revoked')
    FakeSource.all[0]!.fire('config_changed')
    unsub()
    FakeSource.all[0]!.fire('usage')
    expect(seen).toEqual(['usage', 'token_revoked', 'config_changed'])
    live.stop()
    expect(FakeSource.all[0]!.closed).toBe(true)
  })

  it('reconnects with growing backoff and resets it after a successful open', () => {
    vi.useFakeTimers()
    FakeSource.all = []
    const live = new LiveEvents((url) => new FakeSource(url) as never, timers)
    live.start()
    FakeSource.all[0]!.onerror!()
    expect(FakeSource.all[0]!.closed).toBe(true)
    vi.advanceTimersByTime(999)
    expect(FakeSource.all).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(FakeSource.all).toHaveLength(2)
    FakeSource.all[1]!.onerror!()
    vi.advanceTimersByTime(1999)
    expect(FakeSource.all).toHaveLength(2)
    vi.advanceTimersByTime(1)
    expect(FakeSource.all).toHaveLength(3)
    FakeSource.all[2]!.onopen!()
    FakeSource.all[2]!.onerror!()
    vi.advanceTimersByTime(1000)
    expect(FakeSource.all).toHaveLength(4)
    live.stop()
    vi.advanceTimersByTime(60_000)
    expect(FakeSource.all).toHaveLength(4)
  })

  it('does not reconnect after stop', () => {
    vi.useFakeTimers()
    FakeSource.all = []
    const live = new LiveEvents((url) => new FakeSource(url) as never, timers)
    live.start()
    FakeSource.all[0]!.onerror!()
    live.stop()
    vi.advanceTimersByTime(60_000)
    expect(FakeSource.all).toHaveLength(1)
  })

  it('caps the backoff at 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 50].map(backoffMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000])
  })
})

describe('LiveEvents disconnect hook', () => {
  it('reports each error and stops reconnecting when the hook stops the stream', () => {
    vi.useFakeTimers()
    FakeSource.all = []
    const live = new LiveEvents((url) => new FakeSource(url) as never, timers)
    let calls = 0
    live.onDisconnect = () => {
      calls++
      if (calls === 2) live.stop()
    }
    live.start()
    FakeSource.all[0]!.onerror!()
    vi.advanceTimersByTime(1000)
    expect(FakeSource.all).toHaveLength(2)
    FakeSource.all[1]!.onerror!()
    vi.advanceTimersByTime(60_000)
    expect(calls).toBe(2)
    expect(FakeSource.all).toHaveLength(2)
  })
})
