import type { ApiClient } from './api'
import { FinwiseDB, dbName } from './db'
import { SyncEngine, type EngineOptions } from './engine'
import { WebSocketService } from './ws'

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
): Promise<TenantSync> {
  const db = new FinwiseDB(dbName(userId, tenantId))
  await db.open()
  const log = (...a: unknown[]) => console.debug('[sync]', ...a)
  const engine = new SyncEngine({ db, tenantId, log, ...opts })
  await engine.init()
  const ws = new WebSocketService({
    tenantId,
    getToken: () => api.validToken(),
    onUpgradeFailed: () => api.probeUnauthorized(),
    onMessage: (m) => void engine.handleMessage(m),
    onOnline: () => void engine.onOnline(),
    onOffline: (s) => void engine.onOffline(s),
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
