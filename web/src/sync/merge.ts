import type { EntityType, Operation } from '../protocol'
import { FIELDS, stamped, type Entity } from './entities'
import { formatMs, parseMs } from './time'

/**
 * The field-level merge of protocol v2 ("rule M"), as the server applies it, as a pure function.
 * The server is the one that decides; the client uses the same definitions to know which fields
 * an edit changes, and the tests (the shared vectors in `testdata/field-merge-vectors.json`, the
 * in-memory server of the convergence test) use the rule itself.
 *
 * A stored entity has a version stamp V (its `updated_at`) and a stamp per field (every field of
 * its type but `id`; `updated_at` and its mirrors are not fields). An applied create or whole
 * update at stamp u sets V and every field stamp to u.
 *
 * - A whole write (create, or update without `fields`) at u: on nothing stored, a tombstone, an
 *   entity whose field stamps all equal V ("uniform"), or when u > V, the whole-entity rule: newer
 *   applies, older loses, equal applies restamped to V + 1 ms unless the content is identical
 *   (then it is applied without change). Otherwise (live, not uniform, u ≤ V) it is decided like a
 *   field-level update listing every field.
 * - A delete at u: the whole-entity rule against V (equal on a tombstone: unchanged).
 * - A field-level update at u: not applied on nothing stored or a tombstone. Each listed field
 *   takes the entry's value when u is later than its stamp (stamp u), or equal to it with a
 *   different value (stamp + 1 ms); it keeps its value otherwise. Nothing taken: not applied.
 *   Something taken: V = max(every field stamp, V + 1 ms), so every version has a distinct,
 *   increasing `updated_at` (the tenant digest relies on it).
 */

/** One stored entity: live (with its values) or a tombstone, with its stamps in epoch ms. */
export interface MergeState {
  deleted: boolean
  /** V: the version's `updated_at`. */
  version: number
  /** The stored entity (every field, `updated_at` and its mirrors); null for a tombstone. */
  entity: Entity | null
  /** The stamp of each field; a missing one counts as V. */
  stamps: Record<string, number>
}

/** One write as the server receives it: a sync queue entry's operation, payload and fields. */
export interface MergeWrite {
  op: Operation
  payload: Record<string, unknown> | null
  /** The fields a field-level update changes; absent for a whole write. */
  fields?: readonly string[] | null
  /** The entry's queue time: the stamp of a delete without `updated_at`. */
  timestamp?: number
}

export interface MergeResult {
  /** What `sync_ack.applied` says. */
  applied: boolean
  /** True when a new version was stored (it gets a seq and is sent as `data_update`). */
  changed: boolean
  /** The stored state afterwards (unchanged when `changed` is false; null: nothing stored). */
  state: MergeState | null
}

/** Deep JSON equality: numbers by value (12 and 12.0 are one number), objects regardless of key order. */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) {
    const bs = b as unknown[]
    return a.length === bs.length && a.every((x, i) => sameValue(x, bs[i]))
  }
  const ao = a as Record<string, unknown>
  const bo = b as Record<string, unknown>
  const keys = Object.keys(ao).filter((k) => ao[k] !== undefined)
  return keys.length === Object.keys(bo).filter((k) => bo[k] !== undefined).length && keys.every((k) => sameValue(ao[k], bo[k]))
}

/** The fields of a type that a field-level update can name, each with its own stamp: all but `id`. */
export function stampedFields(type: EntityType): readonly string[] {
  return FIELDS[type].filter((f) => f !== 'id')
}

/** The fields of `changes` whose value differs from the entity's (an absent value counts as null). */
export function changedFields(type: EntityType, entity: Entity, changes: Record<string, unknown>): string[] {
  return stampedFields(type).filter((f) => f in changes && !sameValue(entity[f] ?? null, changes[f] ?? null))
}

/** The stored form of a whole payload: exactly the type's fields (absent ones null), stamped. */
function normalize(type: EntityType, payload: Record<string, unknown>, stamp: number): Entity {
  const entity: Entity = { id: String(payload.id) }
  for (const f of stampedFields(type)) entity[f] = payload[f] ?? null
  if ('createdAt' in entity && entity.createdAt === null) entity.createdAt = formatMs(stamp)
  return stamped(type, entity, formatMs(stamp))
}

/** The entity without its version stamps: what two versions must share to be "the same". */
function content(type: EntityType, entity: Entity): Record<string, unknown> {
  return Object.fromEntries(FIELDS[type].map((f) => [f, entity[f]]))
}

function live(type: EntityType, entity: Entity, stamp: number): MergeState {
  return {
    deleted: false,
    version: stamp,
    entity: stamped(type, entity, formatMs(stamp)),
    stamps: Object.fromEntries(stampedFields(type).map((f) => [f, stamp])),
  }
}

function uniform(type: EntityType, s: MergeState): boolean {
  return stampedFields(type).every((f) => (s.stamps[f] ?? s.version) === s.version)
}

/** Decides the listed fields one by one against a live stored entity (see the module docs). */
function mergeFields(
  type: EntityType,
  stored: MergeState,
  fields: readonly string[],
  values: Record<string, unknown>,
  u: number,
): MergeResult {
  const entity: Entity = { ...stored.entity! }
  const stamps = { ...stored.stamps }
  let taken = false
  for (const f of fields) {
    const s = stamps[f] ?? stored.version
    const value = values[f] ?? null
    if (u > s || (u === s && !sameValue(value, entity[f] ?? null))) {
      entity[f] = value
      stamps[f] = u > s ? u : s + 1
      taken = true
    }
  }
  if (!taken) return { applied: false, changed: false, state: stored }
  const all = stampedFields(type).map((f) => stamps[f] ?? stored.version)
  const version = Math.max(...all, stored.version + 1)
  return { applied: true, changed: true, state: { deleted: false, version, entity: stamped(type, entity, formatMs(version)), stamps } }
}

/** The stamp u of a write: its payload's `updated_at`, else (a delete) the entry's timestamp. */
export function writeStamp(write: MergeWrite): number {
  const u = parseMs(write.payload?.updated_at as string | undefined) ?? write.timestamp
  if (u === undefined) throw new Error(`${write.op} without updated_at or timestamp`)
  return u
}

/** Applies one write to the stored state of its entity (null: nothing stored) by rule M. */
export function mergeWrite(type: EntityType, stored: MergeState | null, write: MergeWrite): MergeResult {
  const payload = write.payload ?? {}
  const u = writeStamp(write)
  const unchanged = (applied: boolean): MergeResult => ({ applied, changed: false, state: stored })
  const store = (state: MergeState): MergeResult => ({ applied: true, changed: true, state })

  if (write.op === 'delete') {
    const tombstone = (version: number) => store({ deleted: true, version, entity: null, stamps: {} })
    if (!stored || u > stored.version) return tombstone(u)
    if (u < stored.version) return unchanged(false)
    return stored.deleted ? unchanged(true) : tombstone(stored.version + 1)
  }

  if (write.op === 'update' && write.fields) {
    const unknown = write.fields.find((f) => !stampedFields(type).includes(f))
    if (unknown !== undefined) throw new Error(`'${unknown}' is not a field of ${type} that an update can change`)
    if (!stored || stored.deleted) return unchanged(false)
    return mergeFields(type, stored, write.fields, payload, u)
  }

  const incoming = normalize(type, payload, u)
  if (!stored || stored.deleted || u > stored.version || uniform(type, stored)) {
    if (!stored || u > stored.version) return store(live(type, incoming, u))
    if (u < stored.version) return unchanged(false)
    if (!stored.deleted && sameValue(content(type, stored.entity!), content(type, incoming))) return unchanged(true)
    return store(live(type, incoming, stored.version + 1))
  }
  return mergeFields(type, stored, stampedFields(type), incoming, u)
}
