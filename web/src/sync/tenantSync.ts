import type { ApiClient } from './api'
import { FinwiseDB, dbName } from './db'
import { SyncEngine, type EngineOptions } from './engine'
import { WebSocketService, type AccessLost } from './ws'

/** Everything that syncs one tenant for one user: its Dexie DB, the engine and the socket. */
export interface TenantSync {
  tenantId: string
  db: FinwiseDB
  engine: SyncEngine
  ws: WebSocketService
  stop(): void
}

export async function startTenantSync(
  api: ApiClient,
  userId: string,
  tenantId: string,
  opts: Partial<EngineOptions> = {},
  /** Called once when the user lost access to the tenant; the socket has stopped for good. */
  onAccessLost?: (why: AccessLost) => void,
): Promise<TenantSync> {
  const db = new FinwiseDB(dbName(userId, tenantId))
  await db.open()
  const log = (...a: unknown[]) => console.debug('[sync]', ...a)
  const engine = new SyncEngine({ db, tenantId, log, ...opts })
  await engine.init()
  const ws = new WebSocketService({
    tenantId,
    getToken: () => api.validToken(),
    onUpgradeFailed: async () => {
      if (await api.probeUnauthorized()) return true
      // Refused although the token is good: removed (or the tenant deleted) while we were away?
      if (await api.tenantGone(tenantId)) {
        ws.stop()
        onAccessLost?.('gone')
      }
      return false
    },
    onMessage: (m) => void engine.handleMessage(m),
    onOnline: () => void engine.onOnline(),
    onOffline: (s) => void engine.onOffline(s),
    onAccessLost,
    log,
  })
  engine.setTransport(ws)
  ws.start()
  // Periodic consistency check while online.
  const timer = setInterval(() => {
    if (ws.online) void engine.db.syncQueue.count().then((n) => n === 0 && engine.requestDigest())
  }, 60_000)
  return {
    tenantId,
    db,
    engine,
    ws,
    stop() {
      clearInterval(timer)
      ws.stop()
      engine.close()
      db.close()
    },
  }
}
