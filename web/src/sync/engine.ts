import type {
  BatchItemResult,
  DataStatusResponse,
  DataUpdate,
  EntityType,
  InitialDataLoad,
  OutgoingClientMessage,
  SyncAck,
  SyncNack,
  SyncQueueEntry,
} from '../protocol'
import { RETRYABLE_REASONS } from '../protocol'
import type { DigestState, FinwiseDB, QueueRecord } from './db'
import { COLLECTION, ENTITY_TYPES, UPDATED_AT_MIRRORS, entityKey, isEntityType, type Entity } from './entities'
import { clientAccepts } from './lww'
import { tenantDigest } from './digest'
import { nextStamp, parseMs } from './time'

/** How the engine talks to the server (the WebSocket service, or a fake in tests). */
export interface Transport {
  /** True once the server has said `status: online` on the current connection. */
  readonly online: boolean
  /** Sends one message; false when it could not be sent. */
  send(message: OutgoingClientMessage): boolean
}

export type ConnectionState = 'offline' | 'connecting' | 'online'

/** What the sync indicator shows. */
export interface SyncState {
  connection: ConnectionState
  pending: number
  processing: number
  failed: QueueRecord[]
  lastSyncAt: number | null
  cursor: number | null
  lastDigest: DigestState | null
  loading: boolean
}

/** Entities that changed in the local store (after a local or remote write). */
export interface EntityChange {
  type: EntityType
  put: Entity[]
  deleted: string[]
}

export interface EngineOptions {
  db: FinwiseDB
  tenantId: string
  transport?: Transport
  now?: () => number
  random?: () => number
  /** At most this many entries per `process_sync_batch` (the server's limit is 1000). */
  batchSize?: number
  /** At most about this many bytes of JSON per batch (the server closes the socket above 8 MiB). */
  batchMaxBytes?: number
  /** Backoff after a retryable failure: base · 2^(attempts-1), capped, with ±50 % jitter. */
  retryBaseMs?: number
  retryMaxMs?: number
  /** A batch without an answer after this long goes back to pending. */
  batchTimeoutMs?: number
  /** Minimum time between two full reloads caused by digest mismatches. */
  resyncCooldownMs?: number
  /** Delay before re-checking after a first digest mismatch. */
  recheckDelayMs?: number
  newId?: () => string
  log?: (...args: unknown[]) => void
}

type Deferred = { op: 'put'; entity: Entity } | { op: 'delete'; id: string; updated_at: string | null }

const META_CURSOR = 'cursor'
const META_LAST_SYNC = 'lastSyncAt'
const META_DIGEST = 'lastDigest'

/** Exponential backoff with jitter: base · 2^(attempt-1), at most max, scaled by 0.5–1.0. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(exp * (0.5 + random() * 0.5))
}

/**
 * The sync engine of one tenant: local writes with their queue entries, the queue's batches and
 * retries, LWW application of incoming data with pending protection, delta cursor, digest check.
 * Framework-independent: the UI subscribes to entity changes and state.
 */
export class SyncEngine {
  readonly db: FinwiseDB
  readonly tenantId: string
  private transport: Transport | null
  private readonly now: () => number
  private readonly random: () => number
  private readonly batchSize: number
  private readonly batchMaxBytes: number
  /** Halved when a connection dies with a batch in flight (e.g. closed as too large), reset on success. */
  private batchLimit: number
  private readonly retryBaseMs: number
  private readonly retryMaxMs: number
  private readonly batchTimeoutMs: number
  private readonly resyncCooldownMs: number
  private readonly recheckDelayMs: number
  private readonly newId: () => string
  private readonly log: (...args: unknown[]) => void

  private connection: ConnectionState = 'offline'
  private inFlight: Set<string> | null = null
  private inFlightTimer: ReturnType<typeof setTimeout> | null = null
  private flushing: Promise<void> | null = null
  private flushAgain = false
  private retryTimer: ReturnType<typeof setTimeout> | null = null
  private digestTimer: ReturnType<typeof setTimeout> | null = null
  /** True from sending `request_initial_data` until its answer was applied. */
  private awaitingLoad = false
  private lastResyncAt = 0
  /** The next full load replaces local versions (a resync after a mismatch or a discard). */
  private authoritativeLoad = false
  /** Consecutive digest mismatches; one may be a change still in flight, two trigger a reload. */
  private mismatches = 0
  /** Lowest seq of a winning server version that a lost write of ours still has to receive. */
  private missingWinnerSeq: number | null = null
  /** Versions received while a local change of the entity was queued; applied once it is decided. */
  private readonly deferred = new Map<string, { type: EntityType; d: Deferred }>()
  /** Highest seq at which this session learnt each entity's state (ack or data_update). */
  private readonly knownSeq = new Map<string, number>()
  private cursor: number | null = null
  private lastSyncAt: number | null = null
  private lastDigest: DigestState | null = null
  private readonly entityListeners = new Set<(c: EntityChange) => void>()
  private readonly stateListeners = new Set<(s: SyncState) => void>()
  private readonly digestWaiters: ((r: DataStatusResponse) => void)[] = []
  private stateTimer: ReturnType<typeof setTimeout> | null = null
  private closed = false
  /** Other tabs of the same browser on the same database hear about changes over this channel. */
  private channel: BroadcastChannel | null = null

  constructor(opts: EngineOptions) {
    this.db = opts.db
    this.tenantId = opts.tenantId
    this.transport = opts.transport ?? null
    this.now = opts.now ?? Date.now
    this.random = opts.random ?? Math.random
    this.batchSize = Math.min(1000, opts.batchSize ?? 1000)
    this.batchLimit = this.batchSize
    this.batchMaxBytes = opts.batchMaxBytes ?? 4 * 1024 * 1024
    this.retryBaseMs = opts.retryBaseMs ?? 1000
    this.retryMaxMs = opts.retryMaxMs ?? 60_000
    this.batchTimeoutMs = opts.batchTimeoutMs ?? 30_000
    this.resyncCooldownMs = opts.resyncCooldownMs ?? 10_000
    this.recheckDelayMs = opts.recheckDelayMs ?? 1500
    this.newId = opts.newId ?? (() => globalThis.crypto.randomUUID())
    this.log = opts.log ?? (() => {})
  }

  /** Loads the cursor and puts entries left in `processing` (by a crash or reload) back to pending. */
  async init(): Promise<void> {
    this.cursor = (await this.db.getMeta<number>(META_CURSOR)) ?? null
    this.lastSyncAt = (await this.db.getMeta<number>(META_LAST_SYNC)) ?? null
    this.lastDigest = (await this.db.getMeta<DigestState>(META_DIGEST)) ?? null
    await this.requeueProcessing()
    if (typeof globalThis.BroadcastChannel === 'function') {
      this.channel = new BroadcastChannel(`finwise-sync:${this.db.name}`)
      this.channel.onmessage = (ev: MessageEvent) => void this.onTabMessage(ev.data)
    }
    this.emitState()
  }

  /** Another tab changed the shared database: reload the entities it names, refresh the state. */
  private async onTabMessage(data: { changes?: { type: EntityType; put: string[]; deleted: string[] }[] }) {
    if (this.closed || !data) return
    const changes = new Map<EntityType, EntityChange>()
    for (const c of data.changes ?? []) {
      if (!isEntityType(c.type)) continue
      const rows = await this.db.entities(c.type).bulkGet(c.put)
      const ch = change(changes, c.type)
      rows.forEach((r, i) => (r ? ch.put.push(r) : ch.deleted.push(c.put[i])))
      ch.deleted.push(...c.deleted)
    }
    this.emitEntities(changes, false)
    this.emitState()
    void this.flush()
  }

  setTransport(t: Transport | null): void {
    this.transport = t
  }

  close(): void {
    this.closed = true
    this.channel?.close()
    this.channel = null
    for (const t of [this.inFlightTimer, this.retryTimer, this.digestTimer, this.stateTimer]) if (t) clearTimeout(t)
    this.entityListeners.clear()
    this.stateListeners.clear()
  }

  // ---------------------------------------------------------------- subscriptions

  onEntities(fn: (c: EntityChange) => void): () => void {
    this.entityListeners.add(fn)
    return () => this.entityListeners.delete(fn)
  }

  onState(fn: (s: SyncState) => void): () => void {
    this.stateListeners.add(fn)
    void this.state().then(fn)
    return () => this.stateListeners.delete(fn)
  }

  private emitEntities(changes: Map<EntityType, EntityChange>, broadcast = true): void {
    const summary: { type: EntityType; put: string[]; deleted: string[] }[] = []
    for (const c of changes.values()) {
      if (c.put.length === 0 && c.deleted.length === 0) continue
      for (const fn of this.entityListeners) fn(c)
      summary.push({ type: c.type, put: c.put.map((e) => e.id), deleted: c.deleted })
    }
    if (broadcast && this.channel) {
      try {
        this.channel.postMessage({ changes: summary })
      } catch {
        /* channel closed */
      }
    }
  }

  async state(): Promise<SyncState> {
    const all = await this.db.syncQueue.toArray()
    return {
      connection: this.connection,
      pending: all.filter((e) => e.status === 'pending').length,
      processing: all.filter((e) => e.status === 'processing').length,
      failed: all.filter((e) => e.status === 'failed'),
      lastSyncAt: this.lastSyncAt,
      cursor: this.cursor,
      lastDigest: this.lastDigest,
      loading: this.awaitingLoad,
    }
  }

  private emitState(): void {
    if (this.stateTimer || this.closed) return
    this.stateTimer = setTimeout(async () => {
      this.stateTimer = null
      if (this.closed || this.stateListeners.size === 0) return
      const s = await this.state()
      for (const fn of this.stateListeners) fn(s)
    }, 0)
  }

  // ---------------------------------------------------------------- reading

  async all(type: EntityType): Promise<Entity[]> {
    return this.db.entities(type).toArray()
  }

  async get(type: EntityType, id: string): Promise<Entity | undefined> {
    return this.db.entities(type).get(id)
  }

  getCursor(): number | null {
    return this.cursor
  }

  // ---------------------------------------------------------------- local changes

  /**
   * Creates or updates an entity locally: writes it with a fresh `updated_at` and appends a queue
   * entry in the same Dexie transaction. Returns the stored entity.
   */
  async put(type: EntityType, entity: Entity): Promise<Entity> {
    const table = this.db.entities(type)
    let stored!: Entity
    await this.db.transaction('rw', table, this.db.syncQueue, async () => {
      const prev = await table.get(entity.id)
      const stamp = nextStamp(prev?.updated_at, this.now())
      stored = { ...entity, updated_at: stamp }
      for (const m of UPDATED_AT_MIRRORS[type] ?? []) stored[m] = stamp
      if (type === 'Transaction' && !stored.createdAt) stored.createdAt = stamp
      await table.put(stored)
      await this.db.syncQueue.add(this.queueRecord(type, entity.id, prev ? 'update' : 'create', stored))
    })
    this.emitEntities(new Map([[type, { type, put: [stored], deleted: [] }]]))
    this.afterLocalChange()
    return stored
  }

  /** Deletes an entity locally and queues the delete (payload `{id, updated_at}`) atomically. */
  async remove(type: EntityType, id: string): Promise<void> {
    const table = this.db.entities(type)
    await this.db.transaction('rw', table, this.db.syncQueue, async () => {
      const prev = await table.get(id)
      const stamp = nextStamp(prev?.updated_at, this.now())
      await table.delete(id)
      await this.db.syncQueue.add(this.queueRecord(type, id, 'delete', { id, updated_at: stamp }))
    })
    this.emitEntities(new Map([[type, { type, put: [], deleted: [id] }]]))
    this.afterLocalChange()
  }

  private queueRecord(
    type: EntityType,
    id: string,
    op: QueueRecord['operationType'],
    payload: Record<string, unknown>,
  ): QueueRecord {
    return {
      id: this.newId(),
      tenantId: this.tenantId,
      entityType: type,
      entityId: id,
      operationType: op,
      payload,
      timestamp: this.now(),
      status: 'pending',
      attempts: 0,
      nextAttemptAt: 0,
      entityKey: entityKey(type, id),
    }
  }

  private afterLocalChange(): void {
    this.emitState()
    void this.flush()
  }

  // ---------------------------------------------------------------- connection events

  /** The transport reached `status: online`: reset stuck entries, ask for data, send the queue. */
  async onOnline(): Promise<void> {
    this.connection = 'online'
    this.clearInFlight()
    await this.requeueProcessing()
    this.requestInitialData(this.cursor ?? undefined)
    this.emitState()
    await this.flush()
  }

  /** The transport lost its connection: whatever was in flight goes back to pending. */
  async onOffline(state: ConnectionState = 'offline'): Promise<void> {
    this.connection = state
    this.awaitingLoad = false
    if (this.inFlight && this.inFlight.size > 0) this.batchLimit = Math.max(1, Math.floor(this.inFlight.size / 2))
    this.clearInFlight()
    await this.requeueProcessing()
    this.emitState()
  }

  private clearInFlight(): void {
    this.inFlight = null
    if (this.inFlightTimer) clearTimeout(this.inFlightTimer)
    this.inFlightTimer = null
  }

  private async requeueProcessing(): Promise<void> {
    await this.db.syncQueue
      .where('status')
      .equals('processing')
      .modify((e) => {
        e.status = 'pending'
      })
  }

  requestInitialData(since?: number): void {
    const msg: OutgoingClientMessage =
      since === undefined
        ? { type: 'request_initial_data', tenant_id: this.tenantId }
        : { type: 'request_initial_data', tenant_id: this.tenantId, since }
    if (this.transport?.send(msg)) this.awaitingLoad = true
  }

  /** Asks for a full load (no `since`), e.g. after a digest mismatch or a discarded change. */
  requestFullLoad(): void {
    this.lastResyncAt = this.now()
    this.authoritativeLoad = true
    this.requestInitialData(undefined)
  }

  // ---------------------------------------------------------------- the queue

  /** Sends the next batch of due pending entries, if online and no batch is in flight. */
  flush(): Promise<void> {
    if (this.flushing) {
      this.flushAgain = true
      return this.flushing
    }
    this.flushing = (async () => {
      try {
        do {
          this.flushAgain = false
          await this.sendBatch()
        } while (this.flushAgain && !this.inFlight)
      } finally {
        this.flushing = null
      }
    })()
    return this.flushing
  }

  private async sendBatch(): Promise<void> {
    if (this.closed || !this.transport?.online || this.inFlight) return
    const now = this.now()
    let batch: QueueRecord[] = []
    let nextDue: number | null = null
    await this.db.transaction('rw', this.db.syncQueue, async () => {
      const all = await this.db.syncQueue.orderBy('order').toArray()
      const blocked = new Set<string>()
      let bytes = 0
      for (const e of all) {
        if (batch.length >= this.batchLimit) break
        if (e.status === 'pending' && e.nextAttemptAt <= now && !blocked.has(e.entityKey)) {
          const size = JSON.stringify(e.payload).length + 300
          if (batch.length > 0 && bytes + size > this.batchMaxBytes) break
          bytes += size
          batch.push(e)
          continue
        }
        if (e.status === 'pending' && e.nextAttemptAt > now) {
          nextDue = nextDue === null ? e.nextAttemptAt : Math.min(nextDue, e.nextAttemptAt)
        }
        // Changes of one entity go in order: a later one waits behind an earlier one that is
        // failed, in flight or backing off.
        if (e.status !== 'done') blocked.add(e.entityKey)
      }
      batch = batch.map((e) => ({ ...e, status: 'processing', attempts: e.attempts + 1, lastAttemptAt: now }))
      await this.db.syncQueue.bulkPut(batch)
    })
    if (nextDue !== null) this.scheduleRetry(nextDue - now)
    if (batch.length === 0) return
    const entries: SyncQueueEntry[] = batch.map((e) => ({
      id: e.id,
      tenantId: e.tenantId,
      entityType: e.entityType,
      entityId: e.entityId,
      operationType: e.operationType,
      payload: e.payload,
      timestamp: e.timestamp,
    }))
    this.inFlight = new Set(batch.map((e) => e.id))
    const sent = this.transport.send({ type: 'process_sync_batch', entries })
    if (!sent) {
      this.clearInFlight()
      await this.requeueProcessing()
      return
    }
    this.inFlightTimer = setTimeout(() => {
      this.log('batch timed out; back to pending')
      this.clearInFlight()
      void this.requeueProcessing().then(() => this.flush())
    }, this.batchTimeoutMs)
    this.emitState()
  }

  private scheduleRetry(delayMs: number): void {
    if (this.closed) return
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = null
        void this.flush()
      },
      Math.max(0, delayMs) + 5,
    )
  }

  /** Applies the answers to queue entries: a batch result, or single acks/nacks. */
  async handleResults(results: BatchItemResult[]): Promise<void> {
    const now = this.now()
    const settled: { key: string; type: EntityType; id: string; result: BatchItemResult; op: string; stamp: string | null }[] = []
    await this.db.transaction('rw', [this.db.syncQueue, ...this.db.entityTables()], async () => {
      for (const r of results) {
        const e = await this.db.syncQueue.where('id').equals(r.id).first()
        this.inFlight?.delete(r.id)
        if (!e) continue
        if (r.status === 'processed') {
          await this.db.syncQueue.delete(e.order!)
          if (typeof r.seq === 'number') {
            this.knownSeq.set(e.entityKey, Math.max(this.knownSeq.get(e.entityKey) ?? 0, r.seq))
          }
          const stamp = (r.updated_at ?? (e.payload?.updated_at as string | undefined)) || null
          settled.push({ key: e.entityKey, type: e.entityType, id: e.entityId, result: r, op: e.operationType, stamp })
        } else {
          const retryable =
            (r as { retryable?: boolean }).retryable === true || RETRYABLE_REASONS.includes(r.reason ?? '')
          const error = `${r.reason ?? 'failed'}${r.detail ? `: ${r.detail}` : ''}`
          if (retryable) {
            await this.db.syncQueue.update(e.order!, {
              status: 'pending',
              nextAttemptAt: now + backoffDelay(e.attempts, this.retryBaseMs, this.retryMaxMs, this.random),
              lastError: error,
              reason: r.reason,
            })
          } else {
            await this.db.syncQueue.update(e.order!, { status: 'failed', lastError: error, reason: r.reason })
          }
        }
      }
    })
    if (this.inFlight && this.inFlight.size === 0) {
      this.clearInFlight()
      this.batchLimit = this.batchSize
    }
    // Entities whose last queued change is now decided: take the server's stamp, then any
    // version that arrived while they were protected.
    const changes = new Map<EntityType, EntityChange>()
    // Several changes of one entity may be decided in one batch: the last one counts.
    const lastPerKey = new Map(settled.map((s) => [s.key, s]))
    for (const s of lastPerKey.values()) await this.settle(s.type, s.id, s.key, s.result, s.op, s.stamp, changes)
    this.emitEntities(changes)
    if (this.missingWinnerSeq !== null) {
      const since = Math.max(0, Math.min(this.cursor ?? 0, this.missingWinnerSeq - 1))
      this.missingWinnerSeq = null
      this.requestInitialData(since)
    }
    this.lastSyncAt = now
    await this.db.setMeta(META_LAST_SYNC, now)
    this.emitState()
    await this.flush()
    if ((await this.db.syncQueue.count()) === 0) this.scheduleDigestCheck()
  }

  private async settle(
    type: EntityType,
    id: string,
    key: string,
    result: BatchItemResult,
    op: string,
    stamp: string | null,
    changes: Map<EntityType, EntityChange>,
  ): Promise<void> {
    const table = this.db.entities(type)
    await this.db.transaction('rw', table, this.db.syncQueue, async () => {
      if ((await this.db.syncQueue.where('entityKey').equals(key).count()) > 0) return
      const local = await table.get(id)
      if (op !== 'delete' && result.applied !== false && result.updated_at && local) {
        // The server may have restamped a tie to stored + 1 ms: adopt its stamp.
        if (local.updated_at !== result.updated_at) {
          const updated: Entity = { ...local, updated_at: result.updated_at }
          for (const m of UPDATED_AT_MIRRORS[type] ?? []) updated[m] = result.updated_at
          await table.put(updated)
          change(changes, type).put.push(updated)
        }
      }
      const lost = result.applied === false
      const d = this.deferred.get(key)
      this.deferred.delete(key)
      const deferredTs = d ? parseMs(d.d.op === 'put' ? (d.d.entity.updated_at ?? null) : d.d.updated_at) : null
      if (!lost) {
        // Our version is stored: only a version received meanwhile that is not older replaces it.
        const ours = parseMs(stamp)
        if (d && deferredTs !== null && (ours === null || deferredTs >= ours)) await this.applyOne(type, d.d, true, changes)
        return
      }
      // The server kept another version (stamped result.updated_at). If it already arrived while our
      // change was queued, apply it; a tombstone from a delta load has no stamp but is the winner.
      const winner = parseMs(result.updated_at ?? null)
      if (d && (deferredTs === null || winner === null || deferredTs >= winner)) {
        await this.applyOne(type, d.d, true, changes)
      } else if (typeof result.seq === 'number') {
        // Otherwise make sure it comes: the server normally sends it as a data_update, but that
        // can be lost with a connection (a re-sent entry is only acknowledged again).
        this.missingWinnerSeq = Math.min(this.missingWinnerSeq ?? Infinity, result.seq)
      }
    })
  }

  /** Failed entries go back to pending (all, or one). */
  async retryFailed(id?: string): Promise<void> {
    await this.db.syncQueue
      .where('status')
      .equals('failed')
      .filter((e) => id === undefined || e.id === id)
      .modify((e) => {
        e.status = 'pending'
        e.attempts = 0
        e.nextAttemptAt = 0
      })
    this.emitState()
    await this.flush()
  }

  /**
   * Drops a failed entry. Its local version is dropped too (when no other change of the entity is
   * queued) and a full load restores the server's version.
   */
  async discardFailed(id: string): Promise<void> {
    let reload = false
    const changes = new Map<EntityType, EntityChange>()
    await this.db.transaction('rw', [this.db.syncQueue, ...this.db.entityTables()], async () => {
      const e = await this.db.syncQueue.where('id').equals(id).first()
      if (!e || e.status !== 'failed') return
      await this.db.syncQueue.delete(e.order!)
      if ((await this.db.syncQueue.where('entityKey').equals(e.entityKey).count()) === 0) {
        if (await this.db.entities(e.entityType).get(e.entityId)) {
          await this.db.entities(e.entityType).delete(e.entityId)
          change(changes, e.entityType).deleted.push(e.entityId)
        }
        this.deferred.delete(e.entityKey)
      }
      reload = true
    })
    this.emitEntities(changes)
    this.emitState()
    if (reload) this.requestFullLoad()
  }

  // ---------------------------------------------------------------- incoming messages

  /** Dispatches one server message (0.4 order: `type: status`, then `event_type`, then `type`). */
  async handleMessage(msg: Record<string, unknown>): Promise<void> {
    if (msg.type === 'status') return
    if (msg.event_type === 'data_update') return this.applyDataUpdate(msg as unknown as DataUpdate)
    if (msg.event_type === 'initial_data_load') return this.applyLoad(msg as unknown as InitialDataLoad)
    switch (msg.type) {
      case 'sync_batch_result':
        return this.handleResults((msg.results as BatchItemResult[]) ?? [])
      case 'sync_ack': {
        const a = msg as unknown as SyncAck
        return this.handleResults([
          { id: a.id, status: 'processed', seq: a.seq, applied: a.applied, duplicate: !!a.duplicate, updated_at: a.updated_at },
        ])
      }
      case 'sync_nack': {
        const n = msg as unknown as SyncNack
        return this.handleResults([
          { id: n.id, status: 'failed', duplicate: false, reason: n.reason, detail: n.detail, retryable: n.retryable } as BatchItemResult,
        ])
      }
      case 'data_status_response':
        return this.handleDataStatus(msg as unknown as DataStatusResponse)
      case 'error':
        this.log('server error', msg)
        if (msg.code === 'batch_too_large' && this.inFlight) {
          // The whole batch was refused: send it again in smaller pieces.
          this.batchLimit = Math.max(1, Math.floor(this.inFlight.size / 2))
          this.clearInFlight()
          await this.requeueProcessing()
          await this.flush()
        }
        return
      default:
        return
    }
  }

  private async pendingKeys(): Promise<Set<string>> {
    const keys = await this.db.syncQueue.orderBy('entityKey').uniqueKeys()
    return new Set(keys as string[])
  }

  private defer(type: EntityType, key: string, d: Deferred): void {
    const prev = this.deferred.get(key)
    const ts = (x: Deferred) => parseMs(x.op === 'put' ? (x.entity.updated_at ?? null) : x.updated_at) ?? 0
    if (!prev || ts(d) >= ts(prev.d)) this.deferred.set(key, { type, d })
  }

  /** LWW-applies one version from the server (no protection check: the caller did it). */
  private async applyOne(
    type: EntityType,
    d: Deferred,
    force: boolean,
    changes: Map<EntityType, EntityChange>,
  ): Promise<void> {
    const table = this.db.entities(type)
    const id = d.op === 'put' ? d.entity.id : d.id
    const local = await table.get(id)
    const incomingTs = d.op === 'put' ? (d.entity.updated_at ?? null) : d.updated_at
    if (!force && !clientAccepts(local?.updated_at, !!local, false, incomingTs)) return
    if (d.op === 'put') {
      await table.put(d.entity)
      change(changes, type).put.push(d.entity)
    } else if (local) {
      await table.delete(id)
      change(changes, type).deleted.push(id)
    }
  }

  private async applyDataUpdate(msg: DataUpdate): Promise<void> {
    if (msg.tenant_id !== this.tenantId || !isEntityType(msg.entity_type)) return
    const type = msg.entity_type
    const single = (msg.data?.single_entity ?? {}) as Entity
    const id = single.id
    if (typeof id !== 'string') return
    const key = entityKey(type, id)
    if (typeof msg.seq === 'number') this.knownSeq.set(key, Math.max(this.knownSeq.get(key) ?? 0, msg.seq))
    const d: Deferred =
      msg.operation_type === 'delete'
        ? { op: 'delete', id, updated_at: msg.updated_at ?? null }
        : { op: 'put', entity: { ...single, updated_at: single.updated_at ?? msg.updated_at } }
    const changes = new Map<EntityType, EntityChange>()
    await this.db.transaction('rw', this.db.entities(type), this.db.syncQueue, async () => {
      const pending = (await this.db.syncQueue.where('entityKey').equals(key).count()) > 0
      if (pending) this.defer(type, key, d)
      else await this.applyOne(type, d, false, changes)
    })
    if (!this.awaitingLoad && typeof msg.seq === 'number') await this.advanceCursor(msg.seq)
    this.emitEntities(changes)
  }

  private async advanceCursor(seq: number, replace = false): Promise<void> {
    const next = replace || this.cursor === null ? seq : Math.max(this.cursor, seq)
    if (next !== this.cursor) {
      this.cursor = next
      await this.db.setMeta(META_CURSOR, next)
    }
  }

  /** Applies an `initial_data_load`: full, delta (`delta`, `deleted`) or reset. */
  async applyLoad(msg: InitialDataLoad): Promise<void> {
    if (msg.tenant_id !== this.tenantId) return
    const full = !msg.delta
    const reset = !!msg.reset || (full && this.authoritativeLoad)
    if (full) this.authoritativeLoad = false
    const loadSeq = typeof msg.seq === 'number' ? msg.seq : null
    const changes = new Map<EntityType, EntityChange>()
    const newerThanLoad = (key: string) => loadSeq !== null && (this.knownSeq.get(key) ?? 0) > loadSeq
    await this.db.transaction('rw', [this.db.syncQueue, ...this.db.entityTables()], async () => {
      const pending = await this.pendingKeys()
      for (const type of ENTITY_TYPES) {
        const table = this.db.entities(type)
        const incoming = ((msg.payload as Record<string, Entity[] | undefined>)[COLLECTION[type]] ?? []).filter(
          (e) => e && typeof e.id === 'string',
        )
        const incomingIds = new Set(incoming.map((e) => e.id))
        const locals = await table.bulkGet(incoming.map((e) => e.id))
        const puts: Entity[] = []
        incoming.forEach((e, i) => {
          const key = entityKey(type, e.id)
          if (pending.has(key)) {
            this.defer(type, key, { op: 'put', entity: e })
            return
          }
          const local = locals[i]
          if (reset && !newerThanLoad(key)) puts.push(e)
          else if (clientAccepts(local?.updated_at, !!local, false, e.updated_at)) puts.push(e)
        })
        if (puts.length) {
          await table.bulkPut(puts)
          change(changes, type).put.push(...puts)
        }
        const dels: string[] = []
        if (full) {
          // A full load is the server's whole state: what it lacks is gone, unless queued
          // locally or learnt after the load was read.
          await table.toCollection().eachPrimaryKey((id) => {
            const key = entityKey(type, id)
            if (!incomingIds.has(id) && !pending.has(key) && !newerThanLoad(key)) dels.push(id)
          })
        } else {
          for (const id of msg.deleted?.[type] ?? []) {
            const key = entityKey(type, id)
            if (pending.has(key)) this.defer(type, key, { op: 'delete', id, updated_at: null })
            else if (!newerThanLoad(key)) dels.push(id)
          }
        }
        if (dels.length) {
          const existing = await table.bulkGet(dels)
          const present = dels.filter((_, i) => existing[i])
          await table.bulkDelete(present)
          change(changes, type).deleted.push(...present)
        }
      }
    })
    if (!msg.more) this.awaitingLoad = false
    if (loadSeq !== null) await this.advanceCursor(loadSeq, full)
    this.lastSyncAt = this.now()
    await this.db.setMeta(META_LAST_SYNC, this.lastSyncAt)
    this.emitEntities(changes)
    this.emitState()
    if ((await this.db.syncQueue.count()) === 0) this.scheduleDigestCheck()
  }

  // ---------------------------------------------------------------- digest

  /** The local tenant digest over every entity in the store. */
  async localDigest(): Promise<string> {
    const rows: [EntityType, string, string | null | undefined][] = []
    for (const type of ENTITY_TYPES) {
      await this.db.entities(type).each((e) => rows.push([type, e.id, e.updated_at]))
    }
    return tenantDigest(rows)
  }

  scheduleDigestCheck(delayMs = 300): void {
    if (this.closed) return
    if (this.digestTimer) clearTimeout(this.digestTimer)
    this.digestTimer = setTimeout(() => {
      this.digestTimer = null
      this.requestDigest()
    }, delayMs)
  }

  requestDigest(): boolean {
    return !!this.transport?.send({ type: 'data_status_request', tenant_id: this.tenantId, entity_types: null })
  }

  /** Resolves with the next `data_status_response` (used by tests and the debug hook). */
  nextDataStatus(): Promise<DataStatusResponse> {
    return new Promise((resolve) => this.digestWaiters.push(resolve))
  }

  private async handleDataStatus(msg: DataStatusResponse): Promise<void> {
    for (const w of this.digestWaiters.splice(0)) w(msg)
    if (msg.tenant_id && msg.tenant_id !== this.tenantId) return
    if (typeof msg.tenant_digest !== 'string') return
    // Only a store without queued changes can be compared with the server.
    if ((await this.db.syncQueue.count()) > 0 || this.awaitingLoad) return
    const local = await this.localDigest()
    const equal = local === msg.tenant_digest
    this.lastDigest = { server: msg.tenant_digest, local, equal, at: this.now(), serverSeq: msg.seq }
    await this.db.setMeta(META_DIGEST, this.lastDigest)
    this.emitState()
    if (equal) {
      this.mismatches = 0
      return
    }
    this.mismatches++
    if (this.mismatches === 1) {
      // A data_update may still be on its way: look again shortly before reloading everything.
      this.scheduleDigestCheck(this.recheckDelayMs)
    } else if (this.now() - this.lastResyncAt >= this.resyncCooldownMs) {
      this.log('digest mismatch; requesting a full load')
      this.mismatches = 0
      this.requestFullLoad()
    }
  }
}

function change(changes: Map<EntityType, EntityChange>, type: EntityType): EntityChange {
  let c = changes.get(type)
  if (!c) {
    c = { type, put: [], deleted: [] }
    changes.set(type, c)
  }
  return c
}
