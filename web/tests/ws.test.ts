import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { WebSocketService } from '../src/sync/ws'
import { ApiClient } from '../src/sync/api'

class FakeWS {
  static all: FakeWS[] = []
  readyState = 0
  sent: Record<string, unknown>[] = []
  onopen: (() => void) | null = null
  onmessage: ((e: { data: string }) => void) | null = null
  onclose: ((e: { code: number; reason?: string }) => void) | null = null
  onerror: (() => void) | null = null
  constructor(readonly url: string) {
    FakeWS.all.push(this)
  }
  send(d: string) {
    this.sent.push(JSON.parse(d))
  }
  close() {
    this.readyState = 3
    this.onclose?.({ code: 1000 })
  }
  open() {
    this.readyState = 1
    this.onopen?.()
  }
  receive(m: unknown) {
    this.onmessage?.({ data: JSON.stringify(m) })
  }
  fail(code = 1006, reason = '') {
    this.readyState = 3
    this.onclose?.({ code, reason })
  }
}

function make(over: Partial<ConstructorParameters<typeof WebSocketService>[0]> = {}) {
  const events: string[] = []
  const messages: unknown[] = []
  let token = 'tok1'
  const svc = new WebSocketService({
    tenantId: 'T',
    getToken: async () => token,
    onMessage: (m) => messages.push(m),
    onOnline: () => events.push('online'),
    onOffline: (s) => events.push(s),
    url: (t, tok) => `ws://host/ws_finwise/ws/${t}?token=${tok}`,
    random: () => 1,
    WebSocketImpl: FakeWS as unknown as typeof WebSocket,
    ...over,
  })
  return { svc, events, messages, setToken: (t: string) => (token = t) }
}

beforeEach(() => {
  FakeWS.all = []
  vi.useFakeTimers()
})
afterEach(() => vi.useRealTimers())

describe('WebSocketService', () => {
  it.each([
    [1008, 'membership revoked', 'revoked'],
    [1001, 'tenant deleted', 'deleted'],
  ])('stops for good after close %i %s (access lost)', async (code, reason, why) => {
    const lost: string[] = []
    const { svc, events } = make({ onAccessLost: (w) => lost.push(w) })
    svc.start()
    await vi.advanceTimersByTimeAsync(0)
    FakeWS.all[0].open()
    FakeWS.all[0].receive({ type: 'status', status: 'online', protocol: 2 })
    FakeWS.all[0].fail(code, reason)
    expect(lost).toEqual([why])
    expect(events.at(-1)).toBe('offline')
    await vi.advanceTimersByTimeAsync(120_000)
    expect(FakeWS.all).toHaveLength(1) // never reconnected
    // the browser coming back online does not restart it either
    globalThis.dispatchEvent?.(new Event('online'))
    await vi.advanceTimersByTimeAsync(1000)
    expect(FakeWS.all).toHaveLength(1)
  })

  it('reconnects after other policy closes (an expired token is not a lost membership)', async () => {
    const lost: string[] = []
    const { svc } = make({ onAccessLost: (w) => lost.push(w) })
    svc.start()
    await vi.advanceTimersByTimeAsync(0)
    FakeWS.all[0].open()
    FakeWS.all[0].fail(1008, 'access token expired')
    await vi.advanceTimersByTimeAsync(1000)
    expect(lost).toEqual([])
    expect(FakeWS.all).toHaveLength(2)
    svc.stop()
  })

  it('connects with the token and is online only after status online', async () => {
    const { svc, events, messages } = make()
    svc.start()
    await vi.advanceTimersByTimeAsync(0)
    const ws = FakeWS.all[0]
    expect(ws.url).toBe('ws://host/ws_finwise/ws/T?token=tok1')
    ws.open()
    expect(svc.online).toBe(false)
    expect(svc.send({ type: 'ping', timestamp: 1 })).toBe(true)
    ws.receive({ type: 'status', status: 'online', protocol: 2 })
    expect(svc.online).toBe(true)
    expect(events).toEqual(['connecting', 'online'])
    ws.receive({ event_type: 'data_update', tenant_id: 'T' })
    ws.receive({ type: 'pong', timestamp: 1 })
    expect(messages).toEqual([{ event_type: 'data_update', tenant_id: 'T' }])
    svc.stop()
  })

  it('pings every 20 s', async () => {
    const { svc } = make()
    svc.start()
    await vi.advanceTimersByTimeAsync(0)
    const ws = FakeWS.all[0]
    ws.open()
    ws.receive({ type: 'status', status: 'online' })
    await vi.advanceTimersByTimeAsync(20_000)
    expect(ws.sent.filter((m) => m.type === 'ping')).toHaveLength(1)
    ws.receive({ type: 'pong' })
    await vi.advanceTimersByTimeAsync(20_000)
    expect(ws.sent.filter((m) => m.type === 'ping')).toHaveLength(2)
    svc.stop()
  })

  it('reconnects with exponential backoff (1 s, 2 s, 4 s … 30 s) and resets after online', async () => {
    const { svc, events } = make()
    svc.start()
    await vi.advanceTimersByTimeAsync(0)
    FakeWS.all[0].open()
    FakeWS.all[0].receive({ type: 'status', status: 'online' })
    FakeWS.all[0].fail()
    expect(events.at(-1)).toBe('offline')
    const waits: number[] = []
    for (let i = 0; i < 7; i++) {
      const n = FakeWS.all.length
      let waited = 0
      while (FakeWS.all.length === n) {
        await vi.advanceTimersByTimeAsync(100)
        waited += 100
      }
      waits.push(waited)
      FakeWS.all.at(-1)!.open()
      FakeWS.all.at(-1)!.fail()
    }
    expect(waits).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000])
    svc.stop()
  })

  it('after a refused upgrade asks whether the token was refused and reconnects with the new one', async () => {
    let probed = 0
    const ctx = make({
      onUpgradeFailed: async () => {
        probed++
        ctx.setToken('tok2')
        return true
      },
    })
    ctx.svc.start()
    await vi.advanceTimersByTimeAsync(0)
    FakeWS.all[0].fail() // closed before open: e.g. 401 on the upgrade
    await vi.advanceTimersByTimeAsync(150)
    expect(probed).toBe(1)
    expect(FakeWS.all[1].url).toContain('token=tok2')
    ctx.svc.stop()
  })
})

describe('ApiClient', () => {
  function storage() {
    const m = new Map<string, string>()
    return { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v), removeItem: (k: string) => void m.delete(k) }
  }

  it('logs in, then refreshes a token that is about to expire with a form-encoded refresh grant', async () => {
    let now = 1_000_000
    const calls: { url: string; init: RequestInit }[] = []
    const fetchImpl = (async (url: string, init: RequestInit) => {
      calls.push({ url, init })
      if (url.endsWith('/login')) {
        return new Response(JSON.stringify({ name: 'n', email: 'e@x.de', uuid: 'u1', access_token: 'a1', refresh_token: 'r1', token_type: 'bearer', expires_in: 900 }), { status: 200 })
      }
      if (url.endsWith('/token')) {
        return new Response(JSON.stringify({ access_token: 'a2', refresh_token: 'r2', token_type: 'bearer', expires_in: 900 }), { status: 200 })
      }
      return new Response('{}', { status: 404 })
    }) as unknown as typeof fetch
    const api = new ApiClient({ fetchImpl, storage: storage(), now: () => now })
    await api.login('E@X.de', 'pw')
    expect(JSON.parse(String(calls[0].init.body))).toEqual({ username_or_email: 'e@x.de', password: 'pw' })
    expect(await api.validToken()).toBe('a1')
    now += 850_000 // 50 s before expiry
    expect(await api.validToken()).toBe('a2')
    const refresh = calls.find((c) => c.url.endsWith('/token'))!
    expect((refresh.init.headers as Record<string, string>)['Content-Type']).toBe('application/x-www-form-urlencoded')
    expect(String(refresh.init.body)).toBe('grant_type=refresh_token&refresh_token=r1')
    expect(api.session?.refreshToken).toBe('r2')
  })

  it('probeUnauthorized refreshes when the server answers 401', async () => {
    let refreshed = false
    const fetchImpl = (async (url: string) => {
      if (url.endsWith('/tenants')) return new Response('{"detail":"expired"}', { status: 401 })
      if (url.endsWith('/token')) {
        refreshed = true
        return new Response(JSON.stringify({ access_token: 'a2', refresh_token: 'r2', expires_in: 900 }), { status: 200 })
      }
      return new Response('{}', { status: 404 })
    }) as unknown as typeof fetch
    const s = storage()
    s.setItem('finwise.session', JSON.stringify({ user: { name: 'n', email: 'e', uuid: 'u' }, accessToken: 'a1', refreshToken: 'r1', expiresAt: Date.now() + 600_000 }))
    const api = new ApiClient({ fetchImpl, storage: s })
    expect(await api.probeUnauthorized()).toBe(true)
    expect(refreshed).toBe(true)
    expect(api.session?.accessToken).toBe('a2')
  })
})
