import type {
  BatchItemResult,
  DataStatusResponse,
  DataUpdate,
  EntityType,
  InitialDataLoad,
  SyncAck,
  SyncNack,
} from '../protocol'
import {
  changeOf,
  type ConnectionState,
  type EngineContext,
  type EngineOptions,
  type EntityChange,
  type SyncState,
  type Transport,
} from './context'
import type { FinwiseDB } from './db'
import { DigestCheck } from './digestCheck'
import { isEntityType, type Entity } from './entities'
import { Inbox } from './inbox'
import { Outbox } from './outbox'

export type { ConnectionState, EngineOptions, EntityChange, SyncState, Transport } from './context'
export { backoffDelay } from './outbox'

const META_LAST_SYNC = 'lastSyncAt'

/**
 * The sync engine of one tenant. It wires three parts over one Dexie database:
 *
 * - the outbox (`outbox.ts`): local writes with their queue entries, batches, acks/nacks, retries;
 * - the inbox (`inbox.ts`): LWW application of incoming data with pending protection, the cursor;
 * - the digest check (`digestCheck.ts`): compares the local digest with the server's.
 *
 * and owns what they share: the transport, the connection state, the subscriptions of the UI and
 * the BroadcastChannel to the other tabs. Framework-independent: the UI subscribes to entity
 * changes and state.
 */
export class SyncEngine {
  readonly db: FinwiseDB
  readonly tenantId: string
  private transport: Transport | null
  private readonly log: (...args: unknown[]) => void
  private readonly inbox: Inbox
  private readonly digest: DigestCheck
  private readonly outbox: Outbox

  private connection: ConnectionState = 'offline'
  private lastSyncAt: number | null = null
  private readonly entityListeners = new Set<(c: EntityChange) => void>()
  private readonly stateListeners = new Set<(s: SyncState) => void>()
  private stateTimer: ReturnType<typeof setTimeout> | null = null
  private closed = false
  /** Other tabs of the same browser on the same database hear about changes over this channel. */
  private channel: BroadcastChannel | null = null

  constructor(opts: EngineOptions) {
    this.db = opts.db
    this.tenantId = opts.tenantId
    this.transport = opts.transport ?? null
    this.log = opts.log ?? (() => {})
    const ctx: EngineContext = {
      db: this.db,
      tenantId: this.tenantId,
      now: opts.now ?? Date.now,
      log: this.log,
      transport: () => this.transport,
      closed: () => this.closed,
      emitEntities: (changes, broadcast) => this.emitEntities(changes, broadcast),
      emitState: () => this.emitState(),
      markSynced: (at) => this.markSynced(at),
    }
    this.inbox = new Inbox(ctx, () => this.digest.scheduleDigestCheck())
    this.digest = new DigestCheck(ctx, opts, this.inbox)
    this.outbox = new Outbox(ctx, opts, this.inbox, this.digest)
  }

  /** Loads the cursor and puts entries left in `processing` (by a crash or reload) back to pending. */
  async init(): Promise<void> {
    await this.inbox.init()
    this.lastSyncAt = (await this.db.getMeta<number>(META_LAST_SYNC)) ?? null
    await this.digest.init()
    await this.outbox.requeueProcessing()
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
      const ch = changeOf(changes, c.type)
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
    this.outbox.close()
    this.digest.close()
    if (this.stateTimer) clearTimeout(this.stateTimer)
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
      cursor: this.inbox.getCursor(),
      lastDigest: this.digest.last,
      loading: this.inbox.loading,
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

  private async markSynced(at: number): Promise<void> {
    this.lastSyncAt = at
    await this.db.setMeta(META_LAST_SYNC, at)
  }

  // ---------------------------------------------------------------- reading

  async all(type: EntityType): Promise<Entity[]> {
    return this.db.entities(type).toArray()
  }

  async get(type: EntityType, id: string): Promise<Entity | undefined> {
    return this.db.entities(type).get(id)
  }

  getCursor(): number | null {
    return this.inbox.getCursor()
  }

  // ---------------------------------------------------------------- local changes (outbox)

  /**
   * Creates an entity, or replaces it as a whole (an update without `fields`): writes it with a
   * fresh `updated_at` and queues the change in the same Dexie transaction. Returns the stored entity.
   */
  put(type: EntityType, entity: Entity): Promise<Entity> {
    return this.outbox.put(type, entity)
  }

  /**
   * Changes some fields of a stored entity and queues a field-level update of the fields whose
   * value differs (nothing when none does). Returns the stored entity.
   */
  update(type: EntityType, id: string, changes: Record<string, unknown>): Promise<Entity> {
    return this.outbox.update(type, id, changes)
  }

  /** Deletes an entity locally and queues the delete (payload `{id, updated_at}`) atomically. */
  remove(type: EntityType, id: string): Promise<void> {
    return this.outbox.remove(type, id)
  }

  /** Sends the next batch of due pending entries, if online and no batch is in flight. */
  flush(): Promise<void> {
    return this.outbox.flush()
  }

  /** Applies the answers to queue entries: a batch result, or single acks/nacks. */
  handleResults(results: BatchItemResult[]): Promise<void> {
    return this.outbox.handleResults(results)
  }

  /** Failed entries go back to pending (all, or one). */
  retryFailed(id?: string): Promise<void> {
    return this.outbox.retryFailed(id)
  }

  /**
   * Drops a failed entry. Its local version is dropped too (when no other change of the entity is
   * queued) and a full load restores the server's version.
   */
  discardFailed(id: string): Promise<void> {
    return this.outbox.discardFailed(id)
  }

  // ---------------------------------------------------------------- connection events

  /** The transport reached `status: online`: reset stuck entries, ask for data, send the queue. */
  async onOnline(): Promise<void> {
    this.connection = 'online'
    this.outbox.clearInFlight()
    await this.outbox.requeueProcessing()
    this.inbox.requestInitialData(this.inbox.getCursor() ?? undefined)
    this.emitState()
    await this.flush()
  }

  /** The transport lost its connection: whatever was in flight goes back to pending. */
  async onOffline(state: ConnectionState = 'offline'): Promise<void> {
    this.connection = state
    this.inbox.connectionLost()
    this.outbox.connectionLost()
    await this.outbox.requeueProcessing()
    this.emitState()
  }

  // ---------------------------------------------------------------- incoming data (inbox)

  requestInitialData(since?: number): void {
    this.inbox.requestInitialData(since)
  }

  /** Asks for a full load (no `since`), e.g. after a digest mismatch or a discarded change. */
  requestFullLoad(): void {
    this.inbox.requestFullLoad()
  }

  /** Applies an `initial_data_load`: full, delta (`delta`, `deleted`) or reset. */
  applyLoad(msg: InitialDataLoad): Promise<void> {
    return this.inbox.applyLoad(msg)
  }

  /** Dispatches one server message (0.4 order: `type: status`, then `event_type`, then `type`). */
  async handleMessage(msg: Record<string, unknown>): Promise<void> {
    if (msg.type === 'status') return
    if (msg.event_type === 'data_update') return this.inbox.applyDataUpdate(msg as unknown as DataUpdate)
    if (msg.event_type === 'initial_data_load') return this.inbox.applyLoad(msg as unknown as InitialDataLoad)
    switch (msg.type) {
      case 'sync_batch_result':
        return this.outbox.handleResults((msg.results as BatchItemResult[]) ?? [])
      case 'sync_ack': {
        const a = msg as unknown as SyncAck
        return this.outbox.handleResults([
          { id: a.id, status: 'processed', seq: a.seq, applied: a.applied, duplicate: !!a.duplicate, updated_at: a.updated_at },
        ])
      }
      case 'sync_nack': {
        const n = msg as unknown as SyncNack
        return this.outbox.handleResults([
          { id: n.id, status: 'failed', duplicate: false, reason: n.reason, detail: n.detail, retryable: n.retryable } as BatchItemResult,
        ])
      }
      case 'data_status_response':
        return this.digest.handleDataStatus(msg as unknown as DataStatusResponse)
      case 'error':
        this.log('server error', msg)
        // The whole batch was refused: send it again in smaller pieces.
        if (msg.code === 'batch_too_large') await this.outbox.batchTooLarge()
        return
      default:
        return
    }
  }

  // ---------------------------------------------------------------- digest check

  /** The local tenant digest over every entity in the store. */
  localDigest(): Promise<string> {
    return this.digest.localDigest()
  }

  scheduleDigestCheck(delayMs?: number): void {
    this.digest.scheduleDigestCheck(delayMs)
  }

  requestDigest(): boolean {
    return this.digest.requestDigest()
  }

  /** Resolves with the next `data_status_response` (used by tests and the debug hook). */
  nextDataStatus(): Promise<DataStatusResponse> {
    return this.digest.nextDataStatus()
  }
}
