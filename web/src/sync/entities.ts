import type { EntityType } from '../protocol'

/** Every synced entity type, in the order of the load payload. */
export const ENTITY_TYPES: readonly EntityType[] = [
  'Account',
  'AccountGroup',
  'Category',
  'CategoryGroup',
  'Recipient',
  'Tag',
  'AutomationRule',
  'PlanningTransaction',
  'Transaction',
]

/** The key of each type's list in `initial_data_load.payload`; also the Dexie table name. */
export const COLLECTION: Record<EntityType, string> = {
  Account: 'accounts',
  AccountGroup: 'account_groups',
  Category: 'categories',
  CategoryGroup: 'category_groups',
  Recipient: 'recipients',
  Tag: 'tags',
  AutomationRule: 'automation_rules',
  PlanningTransaction: 'planning_transactions',
  Transaction: 'transactions',
}

/** Fields that carry the same value as `updated_at` (Transaction's 0.4 `updatedAt`). */
export const UPDATED_AT_MIRRORS: Partial<Record<EntityType, readonly string[]>> = {
  Transaction: ['updatedAt'],
}

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
