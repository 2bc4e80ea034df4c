import type { EntityType } from '../protocol'
import { ENTITY_TYPES } from '../protocol/generated/registry'

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
