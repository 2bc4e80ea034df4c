import type { EntityType, OutgoingClientMessage } from '../protocol'
import type { DigestState, FinwiseDB, QueueRecord } from './db'
import type { Entity } from './entities'

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

/**
 * What the parts of the engine (outbox, inbox, digest check) share with it: the store, the clock,
 * the current transport, and the notifications to the UI and the other tabs.
 */
export interface EngineContext {
  readonly db: FinwiseDB
  readonly tenantId: string
  readonly now: () => number
  readonly log: (...args: unknown[]) => void
  /** The current transport (null until one is set). */
  transport(): Transport | null
  /** True once the engine was closed. */
  closed(): boolean
  emitEntities(changes: Map<EntityType, EntityChange>, broadcast?: boolean): void
  emitState(): void
  /** Records (and persists) the time of the last answer applied from the server. */
  markSynced(at: number): Promise<void>
}

/** The change record of `type` in `changes`, created on first use. */
export function changeOf(changes: Map<EntityType, EntityChange>, type: EntityType): EntityChange {
  let c = changes.get(type)
  if (!c) {
    c = { type, put: [], deleted: [] }
    changes.set(type, c)
  }
  return c
}
