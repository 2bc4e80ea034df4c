/**
 * One form mechanism for every entity screen: a form state, create or field-level edit through the
 * entity's generic store, validation messages, and errors of the write itself. Screens supply how a
 * form maps to an entity and back, and how it is validated (message keys).
 */
import { ref, type Ref } from 'vue'
import type { Entity } from '../sync/entities'

interface EntityStoreLike<T extends Entity> {
  get(id: string | null | undefined): T | undefined
  save(entity: Omit<T, 'id' | 'updated_at'> & { id?: string }): Promise<T>
  update(id: string, changes: Partial<T>): Promise<T>
  remove(id: string): Promise<void>
}

export interface EntityFormSpec<T extends Entity, F> {
  blank: () => F
  fromEntity: (e: T) => F
  /** The entity's fields from the form; for an edit only fields that differ are written. */
  toEntity: (f: F, existing?: T) => Omit<T, 'id' | 'updated_at'>
  /** Message keys of what is wrong (empty: valid). */
  validate: (f: F) => string[]
  /** Fields a new entry keeps from the previous one (e.g. the chosen account). */
  sticky?: (keyof F)[]
}

/** A plain copy (no Vue proxies) that IndexedDB can store. */
export function plain<X>(x: X): X {
  return JSON.parse(JSON.stringify(x)) as X
}

export function useEntityForm<T extends Entity, F>(store: EntityStoreLike<T>, spec: EntityFormSpec<T, F>) {
  const form = ref(spec.blank()) as Ref<F>
  const editing = ref<string | null>(null)
  const errors = ref<string[]>([])

  function startEdit(id: string): void {
    const e = store.get(id)
    if (!e) return
    editing.value = id
    errors.value = []
    form.value = spec.fromEntity(e)
  }

  function reset(): void {
    editing.value = null
    errors.value = []
    form.value = spec.blank()
  }

  /** Saves the form; false (and `errors` set) when it is invalid or the write failed. */
  async function submit(): Promise<T | false> {
    errors.value = spec.validate(form.value)
    if (errors.value.length) return false
    const existing = editing.value ? store.get(editing.value) : undefined
    const before = { form: form.value, editing: editing.value }
    const values = plain(spec.toEntity(form.value, existing))
    // cleared at once, so the next entry can be typed while this one is written
    reset()
    if (!existing) for (const k of spec.sticky ?? []) form.value[k] = before.form[k]
    try {
      return existing ? await store.update(existing.id, values as Partial<T>) : await store.save(values)
    } catch (e) {
      form.value = before.form
      editing.value = before.editing
      errors.value = [e instanceof Error ? e.message : String(e)]
      return false
    }
  }

  async function remove(id: string): Promise<void> {
    if (editing.value === id) reset()
    await store.remove(id)
  }

  return { form, editing, errors, startEdit, reset, submit, remove }
}
