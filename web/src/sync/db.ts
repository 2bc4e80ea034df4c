import Dexie, { type Table } from 'dexie'
import type { EntityType, Operation } from '../protocol'
import { COLLECTION, ENTITY_TYPES, type Entity } from './entities'

/** Lifecycle of a queue entry: pending → processing → done (removed) | failed. */
export type QueueStatus = 'pending' | 'processing' | 'done' | 'failed'

/** One local change waiting for the server (the wire `SyncQueueEntry` plus local bookkeeping). */
export interface QueueRecord {
  /** Auto-increment: the order in which changes were made. */
  order?: number
  /** Queue entry id (UUID): echoed by the server and the key of idempotent retries. */
  id: string
  tenantId: string
  entityType: EntityType
  entityId: string
  operationType: Operation
  payload: Record<string, unknown> | null
  /** A field-level update: the fields it changes (its payload holds `id`, `updated_at` and them). */
  fields?: string[]
  /** Milliseconds since the epoch when the change was queued. */
  timestamp: number
  status: QueueStatus
  attempts: number
  /** Not sent again before this time (backoff after a retryable failure). */
  nextAttemptAt: number
  lastAttemptAt?: number
  lastError?: string
  reason?: string
  /** `${entityType}:${entityId}` for per-entity ordering and protection. */
  entityKey: string
}

export interface MetaRecord {
  key: string
  value: unknown
}

export interface DigestState {
  server: string
  local: string
  equal: boolean
  at: number
  serverSeq: number
}

/** The entity types of the first schema (version 1). */
const FIRST_SCHEMA_TYPES = 9

/**
 * The Dexie schema version: 1 for the first nine types, one more for every type added to the
 * registry since (types are only ever added). The registry is generated from Rust, so adding a
 * type there upgrades every browser's database by itself: the new table appears empty and the
 * next sync fills it.
 */
export const SCHEMA_VERSION = 1 + ENTITY_TYPES.length - FIRST_SCHEMA_TYPES

/** Name of the IndexedDB database of one (user, tenant). */
export function dbName(userId: string, tenantId: string): string {
  return `finwise-${userId}-${tenantId}`
}

/** The local store of one tenant for one user: one table per entity type, the queue and meta. */
export class FinwiseDB extends Dexie {
  syncQueue!: Table<QueueRecord, number>
  meta!: Table<MetaRecord, string>

  constructor(name: string) {
    super(name)
    const schema: Record<string, string> = {
      syncQueue: '++order, &id, entityKey, status',
      meta: 'key',
    }
    for (const t of ENTITY_TYPES) schema[COLLECTION[t]] = 'id'
    this.version(SCHEMA_VERSION).stores(schema)
  }

  entities(type: EntityType): Table<Entity, string> {
    return this.table(COLLECTION[type])
  }

  entityTables(): Table<Entity, string>[] {
    return ENTITY_TYPES.map((t) => this.entities(t))
  }

  async getMeta<T>(key: string): Promise<T | undefined> {
    return (await this.meta.get(key))?.value as T | undefined
  }

  async setMeta(key: string, value: unknown): Promise<void> {
    await this.meta.put({ key, value })
  }
}
