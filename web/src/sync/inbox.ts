import type { BatchItemResult, DataUpdate, EntityType, InitialDataLoad, OutgoingClientMessage } from '../protocol'
import { changeOf, type EngineContext, type EntityChange } from './context'
import { COLLECTION, ENTITY_TYPES, entityKey, isEntityType, stamped, type Entity } from './entities'
import { clientAccepts } from './lww'
import { sameValue } from './merge'
import { formatMs, parseMs } from './time'

/** One version received from the server: an entity, or the deletion of one. */
type Deferred = { op: 'put'; entity: Entity } | { op: 'delete'; id: string; updated_at: string | null }

/**
 * What is queued of each entity with queued changes: the fields of its field-level updates, or
 * null when a create, a whole update or a delete of it is queued.
 */
type Pending = Map<string, string[] | null>

/** A queued change the server has decided (acknowledged). */
export interface Decided {
  type: EntityType
  id: string
  key: string
  result: BatchItemResult
  op: string
  /** A field-level update: the server merged it, so the stored version is not simply ours. */
  fieldLevel: boolean
  /** The `updated_at` the server stored, or else the one we sent. */
  stamp: string | null
}

const META_CURSOR = 'cursor'

/**
 * The engine's inbox: LWW application of `data_update` and `initial_data_load` (full, delta,
 * reset) with pending-update and pending-delete protection, the versions kept aside while a local
 * change of their entity is queued, and the delta cursor with the `request_initial_data` it drives.
 */
export class Inbox {
  private readonly ctx: EngineContext
  /** Called when a load was applied and nothing is queued (the digests can be compared). */
  private readonly scheduleDigestCheck: () => void
  private cursor: number | null = null
  /** True from sending `request_initial_data` until its answer was applied. */
  private awaitingLoad = false
  private lastResyncAt = 0
  /** The next full load replaces local versions (a resync after a mismatch or a discard). */
  private authoritativeLoad = false
  /** Lowest seq of a winning server version that a lost write of ours still has to receive. */
  private missingWinnerSeq: number | null = null
  /** Versions received while a local change of the entity was queued; applied once it is decided. */
  private readonly deferred = new Map<string, { type: EntityType; d: Deferred }>()
  /** Highest seq at which this session learnt each entity's state (ack or data_update). */
  private readonly knownSeq = new Map<string, number>()

  constructor(ctx: EngineContext, scheduleDigestCheck: () => void) {
    this.ctx = ctx
    this.scheduleDigestCheck = scheduleDigestCheck
  }

  /** Loads the persisted cursor. */
  async init(): Promise<void> {
    this.cursor = (await this.ctx.db.getMeta<number>(META_CURSOR)) ?? null
  }

  getCursor(): number | null {
    return this.cursor
  }

  /** True while a requested load has not been applied completely. */
  get loading(): boolean {
    return this.awaitingLoad
  }

  /** When the last full load was requested (for the digest check's cooldown). */
  get lastFullLoadAt(): number {
    return this.lastResyncAt
  }

  /** The connection died: an outstanding load will not be answered on it. */
  connectionLost(): void {
    this.awaitingLoad = false
  }

  requestInitialData(since?: number): void {
    const msg: OutgoingClientMessage =
      since === undefined
        ? { type: 'request_initial_data', tenant_id: this.ctx.tenantId }
        : { type: 'request_initial_data', tenant_id: this.ctx.tenantId, since }
    if (this.ctx.transport()?.send(msg)) this.awaitingLoad = true
  }

  /** Asks for a full load (no `since`), e.g. after a digest mismatch or a discarded change. */
  requestFullLoad(): void {
    this.lastResyncAt = this.ctx.now()
    this.authoritativeLoad = true
    this.requestInitialData(undefined)
  }

  // ---------------------------------------------------------------- our own changes, decided

  /** The server acknowledged a change of the entity at `seq`. */
  noteAck(key: string, seq: number): void {
    this.knownSeq.set(key, Math.max(this.knownSeq.get(key) ?? 0, seq))
  }

  /** A failed change was discarded and nothing of the entity is queued: forget what was kept aside. */
  forget(key: string): void {
    this.deferred.delete(key)
  }

  /**
   * The last queued change of an entity was decided: take the server's stamp, then any version that
   * arrived while the entity was protected.
   */
  async settle(s: Decided, changes: Map<EntityType, EntityChange>): Promise<void> {
    const { type, id, key, result } = s
    const db = this.ctx.db
    const table = db.entities(type)
    await db.transaction('rw', table, db.syncQueue, async () => {
      if ((await db.syncQueue.where('entityKey').equals(key).count()) > 0) return
      // Our version is the stored one unless it lost, or was merged field by field with the
      // stored one: then the server's version follows as a data_update (or was kept aside).
      const ours = result.applied !== false && !s.fieldLevel
      const local = await table.get(id)
      if (ours && s.op !== 'delete' && result.updated_at && local && local.updated_at !== result.updated_at) {
        // The server may have restamped a tie to stored + 1 ms: adopt its stamp.
        const updated = stamped(type, local, result.updated_at)
        await table.put(updated)
        changeOf(changes, type).put.push(updated)
      }
      const d = this.deferred.get(key)
      this.deferred.delete(key)
      const deferredTs = d ? parseMs(d.d.op === 'put' ? (d.d.entity.updated_at ?? null) : d.d.updated_at) : null
      if (ours) {
        // Our version is stored: only a version received meanwhile that is not older replaces it.
        const mine = parseMs(s.stamp)
        if (d && deferredTs !== null && (mine === null || deferredTs >= mine)) await this.applyOne(type, d.d, true, changes)
        return
      }
      // The server holds another version (the winner, or the merge) stamped result.updated_at. If it
      // already arrived while our change was queued, apply it; a tombstone from a delta load has no
      // stamp but is the winner.
      const winner = parseMs(result.updated_at ?? null)
      if (d && (deferredTs === null || winner === null || deferredTs >= winner)) {
        await this.applyOne(type, d.d, true, changes)
      } else if (typeof result.seq === 'number' && (result.applied === false || result.duplicate)) {
        // Otherwise make sure it comes: the server sends it as a data_update after the ack, but that
        // can be lost with a connection, and a re-sent entry is only acknowledged again.
        this.missingWinnerSeq = Math.min(this.missingWinnerSeq ?? Infinity, result.seq)
      }
    })
  }

  /** Asks for a delta covering the winners of lost writes that did not arrive (see `settle`). */
  requestMissingWinners(): void {
    if (this.missingWinnerSeq !== null) {
      const since = Math.max(0, Math.min(this.cursor ?? 0, this.missingWinnerSeq - 1))
      this.missingWinnerSeq = null
      this.requestInitialData(since)
    }
  }

  // ---------------------------------------------------------------- incoming data

  /** What is queued of one entity (`key`), or of every entity. */
  private async pending(key?: string): Promise<Pending> {
    const queue = this.ctx.db.syncQueue
    const entries = await (key === undefined ? queue.toArray() : queue.where('entityKey').equals(key).toArray())
    const pending: Pending = new Map()
    for (const e of entries) {
      const fields = pending.has(e.entityKey) ? pending.get(e.entityKey)! : []
      pending.set(e.entityKey, fields && e.operationType === 'update' && e.fields ? [...new Set([...fields, ...e.fields])] : null)
    }
    return pending
  }

  /**
   * A version received while a local change of its entity is queued: kept aside until the change is
   * decided. When only field-level updates are queued, the newest server version is shown at once
   * with the queued fields' local values laid over it, so that other devices' edits of other fields
   * appear (the server merges the same way).
   */
  private async protect(
    type: EntityType,
    key: string,
    d: Deferred,
    fields: string[] | null,
    changes: Map<EntityType, EntityChange>,
  ): Promise<void> {
    const prev = this.deferred.get(key)
    const ts = (x: Deferred) => parseMs(x.op === 'put' ? (x.entity.updated_at ?? null) : x.updated_at) ?? 0
    if (!prev || ts(d) >= ts(prev.d)) this.deferred.set(key, { type, d })
    const newest = this.deferred.get(key)!.d
    if (!fields || newest.op !== 'put') return
    const table = this.ctx.db.entities(type)
    const local = await table.get(newest.entity.id)
    if (!local) return
    const over: Entity = { ...newest.entity, ...Object.fromEntries(fields.map((f) => [f, local[f] ?? null])) }
    // Stamped no older than the local edit, so that a later local edit is stamped after both.
    const stamp = Math.max(parseMs(local.updated_at) ?? 0, parseMs(newest.entity.updated_at) ?? 0)
    const shown = stamped(type, over, formatMs(stamp))
    if (sameValue(shown, local)) return
    await table.put(shown)
    changeOf(changes, type).put.push(shown)
  }

  /** LWW-applies one version from the server (no protection check: the caller did it). */
  private async applyOne(
    type: EntityType,
    d: Deferred,
    force: boolean,
    changes: Map<EntityType, EntityChange>,
  ): Promise<void> {
    const table = this.ctx.db.entities(type)
    const id = d.op === 'put' ? d.entity.id : d.id
    const local = await table.get(id)
    const incomingTs = d.op === 'put' ? (d.entity.updated_at ?? null) : d.updated_at
    if (!force && !clientAccepts(local?.updated_at, !!local, false, incomingTs)) return
    if (d.op === 'put') {
      await table.put(d.entity)
      changeOf(changes, type).put.push(d.entity)
    } else if (local) {
      await table.delete(id)
      changeOf(changes, type).deleted.push(id)
    }
  }

  async applyDataUpdate(msg: DataUpdate): Promise<void> {
    if (msg.tenant_id !== this.ctx.tenantId || !isEntityType(msg.entity_type)) return
    const db = this.ctx.db
    const type = msg.entity_type
    const single = (msg.data?.single_entity ?? {}) as Entity
    const id = single.id
    if (typeof id !== 'string') return
    const key = entityKey(type, id)
    const known = this.knownSeq.get(key) ?? 0
    // A version older than one this session already learnt: e.g. the stored version the server
    // sent back for a change of ours that a later change of ours in the same batch superseded.
    const stale = typeof msg.seq === 'number' && msg.seq < known
    if (typeof msg.seq === 'number') this.knownSeq.set(key, Math.max(known, msg.seq))
    const d: Deferred =
      msg.operation_type === 'delete'
        ? { op: 'delete', id, updated_at: msg.updated_at ?? null }
        : { op: 'put', entity: { ...single, updated_at: single.updated_at ?? msg.updated_at } }
    const changes = new Map<EntityType, EntityChange>()
    if (!stale) await db.transaction('rw', db.entities(type), db.syncQueue, async () => {
      const pending = await this.pending(key)
      if (pending.has(key)) await this.protect(type, key, d, pending.get(key)!, changes)
      else await this.applyOne(type, d, false, changes)
    })
    if (!this.awaitingLoad && typeof msg.seq === 'number') await this.advanceCursor(msg.seq)
    this.ctx.emitEntities(changes)
  }

  private async advanceCursor(seq: number, replace = false): Promise<void> {
    const next = replace || this.cursor === null ? seq : Math.max(this.cursor, seq)
    if (next !== this.cursor) {
      this.cursor = next
      await this.ctx.db.setMeta(META_CURSOR, next)
    }
  }

  /** Applies an `initial_data_load`: full, delta (`delta`, `deleted`) or reset. */
  async applyLoad(msg: InitialDataLoad): Promise<void> {
    if (msg.tenant_id !== this.ctx.tenantId) return
    const db = this.ctx.db
    const full = !msg.delta
    const reset = !!msg.reset || (full && this.authoritativeLoad)
    if (full) this.authoritativeLoad = false
    const loadSeq = typeof msg.seq === 'number' ? msg.seq : null
    const changes = new Map<EntityType, EntityChange>()
    const newerThanLoad = (key: string) => loadSeq !== null && (this.knownSeq.get(key) ?? 0) > loadSeq
    await db.transaction('rw', [db.syncQueue, ...db.entityTables()], async () => {
      const pending = await this.pending()
      for (const type of ENTITY_TYPES) {
        const table = db.entities(type)
        const incoming = ((msg.payload as Record<string, Entity[] | undefined>)[COLLECTION[type]] ?? []).filter(
          (e) => e && typeof e.id === 'string',
        )
        const incomingIds = new Set(incoming.map((e) => e.id))
        const locals = await table.bulkGet(incoming.map((e) => e.id))
        const puts: Entity[] = []
        for (const [i, e] of incoming.entries()) {
          const key = entityKey(type, e.id)
          if (pending.has(key)) {
            await this.protect(type, key, { op: 'put', entity: e }, pending.get(key)!, changes)
            continue
          }
          const local = locals[i]
          if (reset && !newerThanLoad(key)) puts.push(e)
          else if (clientAccepts(local?.updated_at, !!local, false, e.updated_at)) puts.push(e)
        }
        if (puts.length) {
          await table.bulkPut(puts)
          changeOf(changes, type).put.push(...puts)
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
            if (pending.has(key)) await this.protect(type, key, { op: 'delete', id, updated_at: null }, null, changes)
            else if (!newerThanLoad(key)) dels.push(id)
          }
        }
        if (dels.length) {
          const existing = await table.bulkGet(dels)
          const present = dels.filter((_, i) => existing[i])
          await table.bulkDelete(present)
          changeOf(changes, type).deleted.push(...present)
        }
      }
    })
    if (!msg.more) this.awaitingLoad = false
    if (loadSeq !== null) await this.advanceCursor(loadSeq, full)
    await this.ctx.markSynced(this.ctx.now())
    this.ctx.emitEntities(changes)
    this.ctx.emitState()
    if ((await db.syncQueue.count()) === 0) this.scheduleDigestCheck()
  }
}
