import type { EntityType } from '../protocol'
import { ENTITY_TYPES, UPDATED_AT_MIRRORS } from '../protocol/generated/registry'

// The registry itself is generated from Rust (`src/protocol/generated/registry.ts`): never a copy.
export { COLLECTION, ENTITY_TYPES, FIELDS, UPDATED_AT_MIRRORS } from '../protocol/generated/registry'

export function isEntityType(s: unknown): s is EntityType {
  return typeof s === 'string' && (ENTITY_TYPES as readonly string[]).includes(s)
}

/** Any synced entity: an id, a version timestamp, and the type's own fields. */
export interface Entity {
  id: string
  updated_at?: string | null
  [field: string]: unknown
}

/** The queue/deferral key of one entity. */
export function entityKey(type: EntityType, id: string): string {
  return `${type}:${id}`
}

/** The entity with the version stamp `updatedAt` in `updated_at` and its mirrors (Transaction's `updatedAt`). */
export function stamped<T extends Entity>(type: EntityType, entity: T, updatedAt: string): T {
  const out: T = { ...entity, updated_at: updatedAt }
  for (const m of UPDATED_AT_MIRRORS[type] ?? []) (out as Entity)[m] = updatedAt
  return out
}
