/**
 * Rule M (field-level merge) against the test vectors shared with the server's Rust tests:
 * `testdata/field-merge-vectors.json` at the repository root.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { EntityType } from '../src/protocol'
import { FIELDS, UPDATED_AT_MIRRORS, isEntityType } from '../src/sync/entities'
import { changedFields, mergeWrite, sameValue, type MergeState, type MergeWrite } from '../src/sync/merge'
import { formatMs } from '../src/sync/time'

interface Vector {
  name: string
  entityType: EntityType
  writes: MergeWrite[]
  expect: { applied: boolean[]; deleted: boolean; entity?: Record<string, unknown>; updated_at: string }
}

const VECTORS = fileURLToPath(new URL('../../testdata/field-merge-vectors.json', import.meta.url))
const { cases } = JSON.parse(readFileSync(VECTORS, 'utf8')) as { cases: Vector[] }

describe('field-level merge: the shared vectors', () => {
  it('has cases with unique names, each starting with a create', () => {
    expect(cases.length).toBeGreaterThanOrEqual(15)
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length)
    for (const c of cases) {
      expect(isEntityType(c.entityType), c.name).toBe(true)
      expect(c.writes[0].op, c.name).toBe('create')
      expect(c.expect.applied, c.name).toHaveLength(c.writes.length)
    }
  })

  for (const c of cases) {
    it(c.name, () => {
      let state: MergeState | null = null
      const applied = c.writes.map((w) => {
        const r = mergeWrite(c.entityType, state, w)
        state = r.state
        return r.applied
      })
      const final = state as MergeState | null
      expect(applied).toEqual(c.expect.applied)
      expect(final?.deleted).toBe(c.expect.deleted)
      expect(formatMs(final!.version)).toBe(c.expect.updated_at)
      if (c.expect.deleted) return
      const entity = final!.entity!
      const keys = [...FIELDS[c.entityType], 'updated_at', ...(UPDATED_AT_MIRRORS[c.entityType] ?? [])]
      expect(Object.keys(c.expect.entity!).sort()).toEqual([...keys].sort())
      expect(Object.keys(entity).sort()).toEqual([...keys].sort())
      for (const k of keys) expect(sameValue(entity[k], c.expect.entity![k]), `${k}: ${JSON.stringify(entity[k])}`).toBe(true)
    })
  }
})

describe('field-level merge: helpers', () => {
  it('sameValue is deep JSON equality', () => {
    expect(sameValue({ a: [1, { b: null }] }, { a: [1.0, { b: null }] })).toBe(true)
    expect(sameValue({ a: 1, b: 2 }, { b: 2, a: 1 })).toBe(true)
    expect(sameValue(['x'], ['x', 'y'])).toBe(false)
    expect(sameValue({ a: null }, {})).toBe(false)
    expect(sameValue([], {})).toBe(false)
    expect(sameValue('1', 1)).toBe(false)
  })

  it('changedFields lists the registry fields whose value differs', () => {
    const tx = { id: 't', note: null, tagIds: ['a'], amount: -5, updated_at: 'x' }
    expect(changedFields('Transaction', tx, { note: null, tagIds: ['a'], amount: -5 })).toEqual([])
    expect(changedFields('Transaction', tx, { note: 'n', tagIds: ['a', 'b'], amount: -5, updated_at: 'y', unknown: 1, id: 'u' })).toEqual([
      'note',
      'tagIds',
    ])
    expect(changedFields('Transaction', { id: 't' }, { categoryId: null, payee: 'p' })).toEqual(['payee'])
  })

  it('refuses a field that an update cannot name', () => {
    const create = mergeWrite('Tag', null, { op: 'create', payload: { id: 't', name: 'a', updated_at: formatMs(0) } })
    expect(() =>
      mergeWrite('Tag', create.state, { op: 'update', fields: ['updated_at'], payload: { id: 't', updated_at: formatMs(5) } }),
    ).toThrow(/updated_at/)
  })
})
