import { defineStore } from 'pinia'
import { computed, shallowRef, triggerRef } from 'vue'
import type { EntityType } from '../protocol'
import type { Entity } from './entities'
import type { SyncEngine } from './engine'

/**
 * One generic Pinia store per entity type. The store mirrors the Dexie table of the active
 * tenant: it loads it on `bind`, follows every local and remote change the engine reports, and
 * writes through the engine (entity + queue entry in one transaction).
 */
export interface EntityStoreOptions<T> {
  /** Shapes an entity that is about to be created (not an update of a stored one) before it is written. */
  beforeCreate?: (entity: T) => T
  /** Runs after a new entity was written. */
  afterCreate?: (entity: T) => Promise<void>
  /** Runs after a stored entity was changed, with its version before and after. */
  afterUpdate?: (before: T, after: T) => Promise<void>
  /** Runs after an entity was removed, with its last local version (e.g. to remove what it linked). */
  afterRemove?: (entity: T) => Promise<void>
}

export function defineEntityStore<T extends Entity>(type: EntityType, options: EntityStoreOptions<T> = {}) {
  return defineStore(`entity-${type}`, () => {
    const byId = shallowRef(new Map<string, T>())
    const list = computed(() => Array.from(byId.value.values()))
    let engine: SyncEngine | null = null
    let unsubscribe: (() => void) | null = null

    async function bind(e: SyncEngine): Promise<void> {
      unbind()
      engine = e
      unsubscribe = e.onEntities((c) => {
        if (c.type !== type) return
        const m = byId.value
        for (const x of c.put) m.set(x.id, x as T)
        for (const id of c.deleted) m.delete(id)
        triggerRef(byId)
      })
      const rows = (await e.all(type)) as T[]
      byId.value = new Map(rows.map((r) => [r.id, r]))
    }

    function unbind(): void {
      unsubscribe?.()
      unsubscribe = null
      engine = null
      byId.value = new Map()
    }

    function get(id: string | null | undefined): T | undefined {
      return id ? byId.value.get(id) : undefined
    }

    async function save(entity: Omit<T, 'id' | 'updated_at'> & { id?: string }): Promise<T> {
      if (!engine) throw new Error(`${type} store is not bound to a tenant`)
      let full = { ...entity, id: entity.id ?? globalThis.crypto.randomUUID() } as unknown as T
      const before = byId.value.get(full.id)
      if (options.beforeCreate && !before) full = options.beforeCreate(full)
      const saved = (await engine.put(type, full)) as T
      if (!before) await options.afterCreate?.(saved)
      else await options.afterUpdate?.(before, saved)
      return saved
    }

    /** Changes the given fields; only those whose value differs are written and sent (a field-level update). */
    async function update(id: string, changes: Partial<T>): Promise<T> {
      if (!engine) throw new Error(`${type} store is not bound to a tenant`)
      const before = byId.value.get(id)
      const saved = (await engine.update(type, id, changes)) as T
      if (before && options.afterUpdate) await options.afterUpdate(before, saved)
      return saved
    }

    async function remove(id: string): Promise<void> {
      if (!engine) throw new Error(`${type} store is not bound to a tenant`)
      const last = byId.value.get(id)
      await engine.remove(type, id)
      if (last && options.afterRemove) await options.afterRemove(last)
    }

    return { type, byId, list, bind, unbind, get, save, update, remove }
  })
}
