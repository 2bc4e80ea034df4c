import type { OutgoingClientMessage } from '../protocol'
import type { ConnectionState, Transport } from './engine'

export interface WebSocketServiceOptions {
  tenantId: string
  /** A currently valid access token (refreshed first when near expiry), or null if none. */
  getToken: () => Promise<string | null>
  /**
   * Called when the socket closed before it ever opened (a browser does not expose the upgrade's
   * status code). Returns true when the token was refreshed because the server said 401.
   */
  onUpgradeFailed?: () => Promise<boolean>
  onMessage: (msg: Record<string, unknown>) => void
  onOnline: () => void
  onOffline: (state: ConnectionState) => void
  /**
   * The server closed the socket because the user lost access to the tenant (removed from it, or
   * it was deleted). The service has stopped: it does not reconnect to a tenant it may not enter.
   */
  onAccessLost?: (why: AccessLost) => void
  /** `ws(s)://<page host>/ws_finwise/ws/<tenant>?token=…` unless given. */
  url?: (tenantId: string, token: string) => string
  pingIntervalMs?: number
  /** Without any frame from the server for this long the connection counts as dead. */
  deadAfterMs?: number
  reconnectBaseMs?: number
  reconnectMaxMs?: number
  random?: () => number
  WebSocketImpl?: typeof WebSocket
  log?: (...args: unknown[]) => void
}

/** Why the user can no longer sync a tenant: removed from it, it was deleted, or the server no longer lists it. */
export type AccessLost = 'revoked' | 'deleted' | 'gone'

/** The closes after which reconnecting is pointless (docs/PROTOCOL.md: 1008 `membership revoked`, 1001 `tenant deleted`). */
export function accessLostBy(code: number, reason: string): AccessLost | null {
  if (code === 1008 && reason === 'membership revoked') return 'revoked'
  if (code === 1001 && reason === 'tenant deleted') return 'deleted'
  return null
}

export function defaultWsUrl(tenantId: string, token: string): string {
  const proto = globalThis.location?.protocol === 'https:' ? 'wss' : 'ws'
  const host = globalThis.location?.host ?? '127.0.0.1:8000'
  return `${proto}://${host}/ws_finwise/ws/${encodeURIComponent(tenantId)}?token=${encodeURIComponent(token)}`
}

/**
 * The tenant's WebSocket: connects, waits for `status: online`, pings every 20 s, reconnects with
 * exponential backoff and jitter (1 s → 30 s), refreshes the token after a refused upgrade, and
 * follows the browser's online/offline events.
 */
export class WebSocketService implements Transport {
  private ws: WebSocket | null = null
  private state: ConnectionState = 'offline'
  private attempt = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private pingTimer: ReturnType<typeof setInterval> | null = null
  private lastFrameAt = 0
  private stopped = true
  private readonly o: Required<
    Pick<WebSocketServiceOptions, 'pingIntervalMs' | 'deadAfterMs' | 'reconnectBaseMs' | 'reconnectMaxMs' | 'random'>
  > &
    WebSocketServiceOptions
  private readonly onBrowserOnline = () => {
    this.attempt = 0
    if (!this.ws && !this.stopped) this.connectSoon(0)
  }
  private readonly onBrowserOffline = () => this.drop('browser offline')

  constructor(opts: WebSocketServiceOptions) {
    this.o = {
      pingIntervalMs: 20_000,
      deadAfterMs: 45_000,
      reconnectBaseMs: 1000,
      reconnectMaxMs: 30_000,
      random: Math.random,
      ...opts,
    }
  }

  get online(): boolean {
    return this.state === 'online' && this.ws?.readyState === 1
  }

  get connectionState(): ConnectionState {
    return this.state
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    globalThis.addEventListener?.('online', this.onBrowserOnline)
    globalThis.addEventListener?.('offline', this.onBrowserOffline)
    this.connectSoon(0)
  }

  stop(): void {
    this.stopped = true
    globalThis.removeEventListener?.('online', this.onBrowserOnline)
    globalThis.removeEventListener?.('offline', this.onBrowserOffline)
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    const ws = this.ws
    if (ws && ws.readyState === 1) {
      try {
        ws.send(JSON.stringify({ type: 'tenant_disconnect', tenant_id: this.o.tenantId, reason: 'tenant_switch' }))
      } catch {
        /* closing anyway */
      }
    }
    this.drop('stopped')
  }

  send(message: OutgoingClientMessage): boolean {
    const ws = this.ws
    if (!ws || ws.readyState !== 1) return false
    try {
      ws.send(JSON.stringify(message))
      return true
    } catch {
      return false
    }
  }

  /** Reconnect now (e.g. the user pressed "sync"). */
  reconnectNow(): void {
    this.attempt = 0
    if (!this.ws) this.connectSoon(0)
  }

  private setState(s: ConnectionState): void {
    if (this.state === s) return
    this.state = s
    if (s === 'online') this.o.onOnline()
    else this.o.onOffline(s)
  }

  private connectSoon(delay: number): void {
    if (this.stopped) return
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      void this.connect()
    }, delay)
  }

  private scheduleReconnect(): void {
    if (this.stopped) return
    this.attempt++
    const exp = Math.min(this.o.reconnectMaxMs, this.o.reconnectBaseMs * 2 ** (this.attempt - 1))
    const delay = Math.round(exp * (0.5 + this.o.random() * 0.5))
    this.connectSoon(delay)
  }

  private async connect(): Promise<void> {
    if (this.stopped || this.ws) return
    if (globalThis.navigator?.onLine === false) {
      // The browser knows it is offline: wait for its `online` event (and retry slowly anyway).
      this.setState('offline')
      this.scheduleReconnect()
      return
    }
    this.setState('connecting')
    let token: string | null
    try {
      token = await this.o.getToken()
    } catch {
      token = null
    }
    if (this.stopped || this.ws) return
    if (!token) {
      this.setState('offline')
      this.scheduleReconnect()
      return
    }
    const Impl = this.o.WebSocketImpl ?? globalThis.WebSocket
    let ws: WebSocket
    try {
      ws = new Impl((this.o.url ?? defaultWsUrl)(this.o.tenantId, token))
    } catch {
      this.setState('offline')
      this.scheduleReconnect()
      return
    }
    this.ws = ws
    let opened = false
    ws.onopen = () => {
      opened = true
      this.lastFrameAt = Date.now()
      this.startPing()
    }
    ws.onmessage = (ev: MessageEvent) => {
      this.lastFrameAt = Date.now()
      let msg: unknown
      try {
        msg = JSON.parse(typeof ev.data === 'string' ? ev.data : '')
      } catch {
        this.o.log?.('non-JSON frame', ev.data)
        return
      }
      if (!msg || typeof msg !== 'object') return
      const m = msg as Record<string, unknown>
      if (m.type === 'status') {
        if (m.status === 'online') {
          this.attempt = 0
          this.setState('online')
        } else {
          this.setState('connecting')
        }
        return
      }
      if (m.type === 'pong' || m.type === 'ping') return
      this.o.onMessage(m)
    }
    ws.onerror = () => {
      /* followed by close */
    }
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return
      this.ws = null
      this.stopPing()
      this.setState('offline')
      if (this.stopped) return
      const lost = accessLostBy(ev?.code ?? 0, ev?.reason ?? '')
      if (lost) {
        this.o.log?.('access lost:', lost)
        this.stop()
        this.o.onAccessLost?.(lost)
        return
      }
      if (!opened && this.o.onUpgradeFailed) {
        void this.o
          .onUpgradeFailed()
          .catch(() => false)
          .then((refreshed) => (refreshed ? this.connectSoon(100) : this.scheduleReconnect()))
      } else {
        this.scheduleReconnect()
      }
    }
  }

  /** Forgets the current socket at once (a dead socket may take long to report its close). */
  private drop(reason: string): void {
    const ws = this.ws
    if (!ws) {
      if (this.stopped) this.setState('offline')
      return
    }
    this.o.log?.('dropping socket:', reason)
    this.ws = null
    this.stopPing()
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null
    try {
      ws.close(1000, reason)
    } catch {
      /* already closed */
    }
    this.setState('offline')
    if (!this.stopped) this.scheduleReconnect()
  }

  private startPing(): void {
    this.stopPing()
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > this.o.deadAfterMs) {
        this.drop('no frame from the server')
        return
      }
      this.send({ type: 'ping', timestamp: Date.now() })
    }, this.o.pingIntervalMs)
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer)
    this.pingTimer = null
  }
}
