import { describe, expect, it } from 'vitest'
import accounts from '../src/i18n/messages/accounts'
import transfers from '../src/i18n/messages/transfers'
import budget from '../src/i18n/messages/budget'
import planning from '../src/i18n/messages/planning'
import rules from '../src/i18n/messages/rules'
import reports from '../src/i18n/messages/reports'
import { RECURRENCE_END_TYPES, RECURRENCE_PATTERNS, RULE_ACTION_TYPES, RULE_CONDITION_TYPES, RULE_STAGES, WEEKEND_HANDLING } from '../src/model'
import { amountText, parseAmount } from '../src/finance/money'
import { useEntityForm } from '../src/composables/useEntityForm'
import type { Entity } from '../src/sync/entities'

function keys(o: unknown, prefix = ''): string[] {
  if (typeof o !== 'object' || o === null) return [prefix]
  return Object.entries(o).flatMap(([k, v]) => keys(v, prefix ? `${prefix}.${k}` : k)).sort()
}

describe('messages of the planning screens', () => {
  it.each(Object.entries({ accounts, transfers, budget, planning, rules, reports }))('%s has the same keys in German and English', (_, area) => {
    expect(keys(area.de)).toEqual(keys(area.en))
  })
  it('labels every wire value', () => {
    for (const l of [planning.en, planning.de]) {
      expect(Object.keys(l.pattern).sort()).toEqual([...RECURRENCE_PATTERNS].sort())
      expect(Object.keys(l.end).sort()).toEqual([...RECURRENCE_END_TYPES].sort())
      expect(Object.keys(l.weekendHandling).sort()).toEqual([...WEEKEND_HANDLING].sort())
    }
    for (const l of [rules.en, rules.de]) {
      expect(Object.keys(l.condition).sort()).toEqual([...RULE_CONDITION_TYPES].sort())
      expect(Object.keys(l.action).sort()).toEqual([...RULE_ACTION_TYPES].sort())
      expect(Object.keys(l.stages).sort()).toEqual([...RULE_STAGES].sort())
    }
  })
})

describe('amounts typed in either locale', () => {
  it.each([
    ['1.234,56', 1234.56], ['1234,5', 1234.5], ['1,234.56', 1234.56], ['1234.56', 1234.56], ['-42,50', -42.5], ['€ 7', 7],
    ['1.000.000', 1000000], ['12,345', 12.35], ['', NaN], ['abc', NaN], ['1,2,3', NaN],
  ])('%s → %s', (text, want) => {
    expect(parseAmount(text)).toBe(want)
  })
  it('writes amounts back for a field', () => {
    expect(amountText(-42.5, 'de')).toBe('-42,5')
    expect(amountText(1234.56, 'en')).toBe('1234.56')
    expect(amountText(null, 'de')).toBe('')
  })
})

interface Item extends Entity { name: string; n: number }
function fakeStore() {
  const m = new Map<string, Item>()
  const calls: string[] = []
  return {
    m,
    calls,
    get: (id: string | null | undefined) => (id ? m.get(id) : undefined),
    async save(e: Omit<Item, 'id' | 'updated_at'> & { id?: string }) {
      const x = { ...e, id: e.id ?? `id${m.size + 1}` } as Item
      m.set(x.id, x)
      calls.push(`save ${x.name}`)
      return x
    },
    async update(id: string, c: Partial<Item>) {
      if (c.name === 'boom') throw new Error('refused')
      const x = { ...m.get(id)!, ...c }
      m.set(id, x)
      calls.push(`update ${id} ${JSON.stringify(c)}`)
      return x
    },
    async remove(id: string) {
      m.delete(id)
      calls.push(`remove ${id}`)
    },
  }
}

describe('the generic entity form', () => {
  const spec = {
    blank: () => ({ name: '', n: '1', keep: 'x' }),
    fromEntity: (e: Item) => ({ name: e.name, n: String(e.n), keep: '' }),
    toEntity: (f: { name: string; n: string }) => ({ name: f.name.trim(), n: Number(f.n) }),
    validate: (f: { name: string }) => (f.name.trim() ? [] : ['nameRequired']),
    sticky: ['keep' as const],
  }
  it('validates, creates, keeps sticky fields, edits and removes', async () => {
    const store = fakeStore()
    const f = useEntityForm(store, spec)
    expect(await f.submit()).toBe(false)
    expect(f.errors.value).toEqual(['nameRequired'])
    f.form.value = { name: ' A ', n: '2', keep: 'chosen' }
    const saved = await f.submit()
    expect(saved).toMatchObject({ name: 'A', n: 2 })
    expect(f.form.value).toEqual({ name: '', n: '1', keep: 'chosen' })
    f.startEdit((saved as Item).id)
    expect(f.editing.value).toBe('id1')
    f.form.value.name = 'B'
    await f.submit()
    expect(store.calls).toEqual(['save A', 'update id1 {"name":"B","n":2}'])
    expect(f.editing.value).toBeNull()
    await f.remove('id1')
    expect(store.m.size).toBe(0)
  })
  it('a refused write keeps the form and says why', async () => {
    const store = fakeStore()
    const f = useEntityForm(store, spec)
    f.form.value.name = 'A'
    await f.submit()
    f.startEdit('id1')
    f.form.value.name = 'boom'
    expect(await f.submit()).toBe(false)
    expect(f.errors.value).toEqual(['refused'])
    expect(f.editing.value).toBe('id1')
    expect(f.form.value.name).toBe('boom')
  })
})
