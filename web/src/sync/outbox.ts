import type { BatchItemResult, EntityType, SyncQueueEntry } from '../protocol'
import { RETRYABLE_REASONS } from '../protocol'
import { changeOf, type EngineContext, type EngineOptions, type EntityChange } from './context'
import type { QueueRecord } from './db'
import type { DigestCheck } from './digestCheck'
import { entityKey, stamped, type Entity } from './entities'
import type { Decided, Inbox } from './inbox'
import { changedFields } from './merge'
import { nextStamp } from './time'

/** The payload of a queued create or update: the whole entity, or `id`, `updated_at` and the listed fields. */
function changePayload(stored: Entity, fields?: string[]): Record<string, unknown> {
  if (!fields) return stored
  return { id: stored.id, updated_at: stored.updated_at, ...Object.fromEntries(fields.map((f) => [f, stored[f] ?? null])) }
}

/** Exponential backoff with jitter: base · 2^(attempt-1), at most max, scaled by 0.5–1.0. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(exp * (0.5 + random() * 0.5))
}

/**
 * The engine's outbox: local writes with their queue entries, the queue's batches (in order per
 * entity, bounded in entries and bytes, one in flight), the answers to them (acks, nacks, batch
 * results) with backoff for retryable failures, and the failed entries kept for retry or discard.
 */
export class Outbox {
  private readonly ctx: EngineContext
  private readonly inbox: Inbox
  private readonly digest: DigestCheck
  private readonly random: () => number
  private readonly newId: () => string
  private readonly batchSize: number
  private readonly batchMaxBytes: number
  /** Halved when a connection dies with a batch in flight (e.g. closed as too large), reset on success. */
  private batchLimit: number
  private readonly retryBaseMs: number
  private readonly retryMaxMs: number
  private readonly batchTimeoutMs: number
  private inFlight: Set<string> | null = null
  private inFlightTimer: ReturnType<typeof setTimeout> | null = null
  private flushing: Promise<void> | null = null
  private flushAgain = false
  private retryTimer: ReturnType<typeof setTimeout> | null = null

  constructor(ctx: EngineContext, opts: EngineOptions, inbox: Inbox, digest: DigestCheck) {
    this.ctx = ctx
    this.inbox = inbox
    this.digest = digest
    this.random = opts.random ?? Math.random
    this.newId = opts.newId ?? (() => globalThis.crypto.randomUUID())
    this.batchSize = Math.min(1000, opts.batchSize ?? 1000)
    this.batchLimit = this.batchSize
    this.batchMaxBytes = opts.batchMaxBytes ?? 4 * 1024 * 1024
    this.retryBaseMs = opts.retryBaseMs ?? 1000
    this.retryMaxMs = opts.retryMaxMs ?? 60_000
    this.batchTimeoutMs = opts.batchTimeoutMs ?? 30_000
  }

  close(): void {
    for (const t of [this.inFlightTimer, this.retryTimer]) if (t) clearTimeout(t)
  }

  // ---------------------------------------------------------------- local changes

  /**
   * Creates an entity, or replaces it as a whole (an update without `fields`): writes it with a
   * fresh `updated_at` and queues the change in the same Dexie transaction. Returns the stored entity.
   */
  async put(type: EntityType, entity: Entity): Promise<Entity> {
    return (await this.write(type, entity.id, () => ({ entity })))!
  }

  /**
   * Changes some fields of a stored entity: only the fields of `changes` whose value differs from
   * the stored one are written, and they are queued as a field-level update (`fields`), so that
   * edits of other fields on other devices survive. Returns the stored entity (unchanged and
   * nothing queued when no value differs).
   */
  async update(type: EntityType, id: string, changes: Record<string, unknown>): Promise<Entity> {
    return (await this.write(type, id, (prev) => {
      if (!prev) throw new Error(`${type} ${id} is not stored`)
      const fields = changedFields(type, prev, changes)
      if (fields.length === 0) return null
      return { entity: { ...prev, ...Object.fromEntries(fields.map((f) => [f, changes[f] ?? null])) }, fields }
    }))!
  }

  /**
   * Writes the version `change` makes of the stored entity (null: nothing changes) with a fresh
   * `updated_at` and queues it, atomically. Returns the stored entity.
   */
  private async write(
    type: EntityType,
    id: string,
    change: (prev: Entity | undefined) => { entity: Entity; fields?: string[] } | null,
  ): Promise<Entity | undefined> {
    const db = this.ctx.db
    const table = db.entities(type)
    let stored: Entity | undefined
    let written = false
    await db.transaction('rw', table, db.syncQueue, async () => {
      const prev = await table.get(id)
      stored = prev
      const next = change(prev)
      if (!next) return
      const stamp = nextStamp(prev?.updated_at, this.ctx.now())
      stored = stamped(type, next.entity, stamp)
      if (type === 'Transaction' && !stored.createdAt) stored.createdAt = stamp
      await table.put(stored)
      await this.enqueue(type, prev ? 'update' : 'create', stored, next.fields)
      written = true
    })
    if (written) {
      this.ctx.emitEntities(new Map([[type, { type, put: [stored!], deleted: [] }]]))
      this.afterLocalChange()
    }
    return stored
  }

  /**
   * Queues a create or update of `stored` (inside the caller's transaction). When the entity's
   * last queued change was never sent, the new one is merged into it instead: create + update →
   * a create of the whole entity; field-level + field-level → one field-level update of the fields
   * of both; any other pair of updates → a whole update. Deletes are never merged (`remove`).
   */
  private async enqueue(type: EntityType, op: 'create' | 'update', stored: Entity, fields?: string[]): Promise<void> {
    const db = this.ctx.db
    const last = await db.syncQueue.where('entityKey').equals(entityKey(type, stored.id)).last()
    // attempts === 0: never sent, so its id was not used yet and its content may still change
    if (!last || last.status !== 'pending' || last.attempts > 0 || last.operationType === 'delete') {
      await db.syncQueue.add(this.queueRecord(type, stored.id, op, changePayload(stored, fields), fields))
      return
    }
    const both = last.operationType === 'update' && last.fields && fields ? [...new Set([...last.fields, ...fields])] : undefined
    const merged: QueueRecord = { ...last, payload: changePayload(stored, both), timestamp: this.ctx.now() }
    if (both) merged.fields = both
    else delete merged.fields
    await db.syncQueue.put(merged)
  }

  /** Deletes an entity locally and queues the delete (payload `{id, updated_at}`) atomically. */
  async remove(type: EntityType, id: string): Promise<void> {
    const db = this.ctx.db
    const table = db.entities(type)
    await db.transaction('rw', table, db.syncQueue, async () => {
      const prev = await table.get(id)
      const stamp = nextStamp(prev?.updated_at, this.ctx.now())
      await table.delete(id)
      await db.syncQueue.add(this.queueRecord(type, id, 'delete', { id, updated_at: stamp }))
    })
    this.ctx.emitEntities(new Map([[type, { type, put: [], deleted: [id] }]]))
    this.afterLocalChange()
  }

  private queueRecord(
    type: EntityType,
    id: string,
    op: QueueRecord['operationType'],
    payload: Record<string, unknown>,
    fields?: string[],
  ): QueueRecord {
    return {
      id: this.newId(),
      tenantId: this.ctx.tenantId,
      entityType: type,
      entityId: id,
      operationType: op,
      payload,
      ...(fields ? { fields } : {}),
      timestamp: this.ctx.now(),
      status: 'pending',
      attempts: 0,
      nextAttemptAt: 0,
      entityKey: entityKey(type, id),
    }
  }

  private afterLocalChange(): void {
    this.ctx.emitState()
    void this.flush()
  }

  // ---------------------------------------------------------------- connection events

  /** A new connection: nothing is in flight on it. */
  clearInFlight(): void {
    this.inFlight = null
    if (this.inFlightTimer) clearTimeout(this.inFlightTimer)
    this.inFlightTimer = null
  }

  /** The connection died: a batch in flight was perhaps too large, so the next one is half as large. */
  connectionLost(): void {
    if (this.inFlight && this.inFlight.size > 0) this.batchLimit = Math.max(1, Math.floor(this.inFlight.size / 2))
    this.clearInFlight()
  }

  /** The server refused the whole batch in flight as too large: send it again in smaller pieces. */
  async batchTooLarge(): Promise<void> {
    if (!this.inFlight) return
    this.batchLimit = Math.max(1, Math.floor(this.inFlight.size / 2))
    this.clearInFlight()
    await this.requeueProcessing()
    await this.flush()
  }

  /** Entries left in `processing` (by a crash, a reload or a lost connection) go back to pending. */
  async requeueProcessing(): Promise<void> {
    await this.ctx.db.syncQueue
      .where('status')
      .equals('processing')
      .modify((e) => {
        e.status = 'pending'
      })
  }

  // ---------------------------------------------------------------- sending

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
    const db = this.ctx.db
    if (this.ctx.closed() || !this.ctx.transport()?.online || this.inFlight) return
    const now = this.ctx.now()
    let batch: QueueRecord[] = []
    let nextDue: number | null = null
    await db.transaction('rw', db.syncQueue, async () => {
      const all = await db.syncQueue.orderBy('order').toArray()
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
      await db.syncQueue.bulkPut(batch)
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
      ...(e.fields ? { fields: e.fields } : {}),
      timestamp: e.timestamp,
    }))
    this.inFlight = new Set(batch.map((e) => e.id))
    const sent = this.ctx.transport()!.send({ type: 'process_sync_batch', entries })
    if (!sent) {
      this.clearInFlight()
      await this.requeueProcessing()
      return
    }
    this.inFlightTimer = setTimeout(() => {
      this.ctx.log('batch timed out; back to pending')
      this.clearInFlight()
      void this.requeueProcessing().then(() => this.flush())
    }, this.batchTimeoutMs)
    this.ctx.emitState()
  }

  private scheduleRetry(delayMs: number): void {
    if (this.ctx.closed()) return
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = null
        void this.flush()
      },
      Math.max(0, delayMs) + 5,
    )
  }

  // ---------------------------------------------------------------- answers

  /** Applies the answers to queue entries: a batch result, or single acks/nacks. */
  async handleResults(results: BatchItemResult[]): Promise<void> {
    const db = this.ctx.db
    const now = this.ctx.now()
    const settled: Decided[] = []
    await db.transaction('rw', [db.syncQueue, ...db.entityTables()], async () => {
      for (const r of results) {
        const e = await db.syncQueue.where('id').equals(r.id).first()
        this.inFlight?.delete(r.id)
        if (!e) continue
        if (r.status === 'processed') {
          await db.syncQueue.delete(e.order!)
          if (typeof r.seq === 'number') this.inbox.noteAck(e.entityKey, r.seq)
          const stamp = (r.updated_at ?? (e.payload?.updated_at as string | undefined)) || null
          settled.push({
            key: e.entityKey, type: e.entityType, id: e.entityId, result: r, op: e.operationType, fieldLevel: !!e.fields, stamp,
          })
        } else {
          const retryable =
            (r as { retryable?: boolean }).retryable === true || (r.reason != null && RETRYABLE_REASONS.includes(r.reason))
          const error = `${r.reason ?? 'failed'}${r.detail ? `: ${r.detail}` : ''}`
          if (retryable) {
            await db.syncQueue.update(e.order!, {
              status: 'pending',
              nextAttemptAt: now + backoffDelay(e.attempts, this.retryBaseMs, this.retryMaxMs, this.random),
              lastError: error,
              reason: r.reason,
            })
          } else {
            await db.syncQueue.update(e.order!, { status: 'failed', lastError: error, reason: r.reason })
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
    for (const s of lastPerKey.values()) await this.inbox.settle(s, changes)
    this.ctx.emitEntities(changes)
    this.inbox.requestMissingWinners()
    await this.ctx.markSynced(now)
    this.ctx.emitState()
    await this.flush()
    if ((await db.syncQueue.count()) === 0) this.digest.scheduleDigestCheck()
  }

  // ---------------------------------------------------------------- failed entries

  /** Failed entries go back to pending (all, or one). */
  async retryFailed(id?: string): Promise<void> {
    await this.ctx.db.syncQueue
      .where('status')
      .equals('failed')
      .filter((e) => id === undefined || e.id === id)
      .modify((e) => {
        e.status = 'pending'
        e.attempts = 0
        e.nextAttemptAt = 0
      })
    this.ctx.emitState()
    await this.flush()
  }

  /**
   * Drops a failed entry. Its local version is dropped too (when no other change of the entity is
   * queued) and a full load restores the server's version.
   */
  async discardFailed(id: string): Promise<void> {
    const db = this.ctx.db
    let reload = false
    const changes = new Map<EntityType, EntityChange>()
    await db.transaction('rw', [db.syncQueue, ...db.entityTables()], async () => {
      const e = await db.syncQueue.where('id').equals(id).first()
      if (!e || e.status !== 'failed') return
      await db.syncQueue.delete(e.order!)
      if ((await db.syncQueue.where('entityKey').equals(e.entityKey).count()) === 0) {
        if (await db.entities(e.entityType).get(e.entityId)) {
          await db.entities(e.entityType).delete(e.entityId)
          changeOf(changes, e.entityType).deleted.push(e.entityId)
        }
        this.inbox.forget(e.entityKey)
      }
      reload = true
    })
    this.ctx.emitEntities(changes)
    this.ctx.emitState()
    if (reload) this.inbox.requestFullLoad()
  }
}
