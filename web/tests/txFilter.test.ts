import { describe, expect, it } from 'vitest'
import type { Transaction } from '../src/model'
import { amountPrefix, EMPTY_FILTER, filterTransactions, matchesText, parseAmount, presetRange, sumAmounts, type TxNames } from '../src/txFilter'

const names: TxNames = {
  account: (id) => ({ a1: 'Girokonto', a2: 'Sparbuch' })[id],
  category: (id) => ({ c1: 'Lebensmittel', c2: 'Miete' })[id],
  recipient: (id) => ({ r1: 'Supermarkt Nord' })[id],
  tag: (id) => ({ t1: 'Urlaub' })[id],
}

let n = 0
function tx(over: Partial<Transaction>): Transaction {
  return {
    id: `tx${n++}`, accountId: 'a1', date: '2026-12-01', valueDate: '2026-12-01', amount: -10, type: 'EXPENSE', tagIds: [],
    description: '', note: null, categoryId: null, recipientId: null, payee: null, ...over,
  } as Transaction
}

const list = [
  tx({ description: 'Wocheneinkauf', amount: -42.5, categoryId: 'c1', recipientId: 'r1', date: '2026-12-03' }),
  tx({ description: 'Gehalt', amount: 1000, type: 'INCOME', date: '2026-11-30', note: 'Dezember' }),
  tx({ description: 'Miete Dezember', amount: -750, categoryId: 'c2', accountId: 'a2', date: '2026-12-01', payee: 'Vermieter GmbH' }),
  tx({ description: 'Flug', amount: -1234.5, tagIds: ['t1'], date: '2026-01-15' }),
]
const ids = (f: Partial<typeof EMPTY_FILTER>) => filterTransactions(list, { ...EMPTY_FILTER, ...f }, names).map((t) => t.description)

describe('transaction filter', () => {
  it('without a filter lists everything, newest first', () => {
    expect(ids({})).toEqual(['Wocheneinkauf', 'Miete Dezember', 'Gehalt', 'Flug'])
  })

  it('searches description, payee, recipient, note, category, account and tags, case-insensitively', () => {
    expect(ids({ text: 'WOCHEN' })).toEqual(['Wocheneinkauf'])
    expect(ids({ text: 'vermieter' })).toEqual(['Miete Dezember']) // payee
    expect(ids({ text: 'nord' })).toEqual(['Wocheneinkauf']) // recipient's name
    expect(ids({ text: 'dezember' })).toEqual(['Miete Dezember', 'Gehalt']) // description and note
    expect(ids({ text: 'lebensmittel' })).toEqual(['Wocheneinkauf']) // category
    expect(ids({ text: 'sparbuch' })).toEqual(['Miete Dezember']) // account
    expect(ids({ text: 'urlaub' })).toEqual(['Flug']) // tag
    expect(ids({ text: 'nothing-like-this' })).toEqual([])
  })

  it('needs every word to match', () => {
    expect(ids({ text: 'dezember miete' })).toEqual(['Miete Dezember'])
    expect(ids({ text: 'dezember gehalt' })).toEqual(['Gehalt'])
    expect(ids({ text: 'dezember flug' })).toEqual([])
  })

  it('finds amounts in German and English writing, ignoring the sign', () => {
    expect(ids({ text: '42,5' })).toEqual(['Wocheneinkauf'])
    expect(ids({ text: '42.50' })).toEqual(['Wocheneinkauf'])
    expect(ids({ text: '-42,50' })).toEqual(['Wocheneinkauf'])
    expect(ids({ text: '1.234,50' })).toEqual(['Flug'])
    expect(ids({ text: '1000' })).toEqual(['Gehalt'])
    expect(ids({ text: '75' })).toEqual(['Miete Dezember'])
    expect(ids({ text: '43' })).toEqual([])
  })

  it('parses amount words', () => {
    expect(amountPrefix('12')).toBe('12')
    expect(amountPrefix('12,5')).toBe('12.5')
    expect(amountPrefix('1.234')).toBe('1234')
    expect(amountPrefix('1.5')).toBe('1.5')
    expect(amountPrefix('abc')).toBeNull()
    expect(amountPrefix('1,2,3')).toBeNull()
  })

  it('parses typed amounts', () => {
    expect(parseAmount('12,50')).toBe(12.5)
    expect(parseAmount('1.234,50')).toBe(1234.5)
    expect(parseAmount('1234.5')).toBe(1234.5)
    expect(parseAmount(' -7 ')).toBe(-7)
    expect(parseAmount('1.234')).toBe(1234)
    expect(parseAmount('')).toBeNull()
    expect(parseAmount('zwölf')).toBeNull()
    expect(parseAmount('12.')).toBeNull()
  })

  it('filters by inclusive date range and account', () => {
    expect(ids({ from: '2026-12-01' })).toEqual(['Wocheneinkauf', 'Miete Dezember'])
    expect(ids({ to: '2026-12-01' })).toEqual(['Miete Dezember', 'Gehalt', 'Flug'])
    expect(ids({ from: '2026-11-30', to: '2026-12-01' })).toEqual(['Miete Dezember', 'Gehalt'])
    expect(ids({ accountId: 'a2' })).toEqual(['Miete Dezember'])
    expect(ids({ accountId: 'a1', from: '2026-12-01', text: 'miete' })).toEqual([])
  })

  it('an empty query matches', () => {
    expect(matchesText(list[0], '   ', names)).toBe(true)
  })

  it('sums in cents', () => {
    expect(sumAmounts([tx({ amount: 0.1 }), tx({ amount: 0.2 })])).toBe(0.3)
    expect(sumAmounts(filterTransactions(list, { ...EMPTY_FILTER, from: '2026-11-01' }, names))).toBe(207.5)
    expect(sumAmounts([])).toBe(0)
  })

  it('computes the presets', () => {
    expect(presetRange('thisMonth', '2026-12-02')).toEqual({ from: '2026-12-01', to: '2026-12-31' })
    expect(presetRange('lastMonth', '2026-12-02')).toEqual({ from: '2026-11-01', to: '2026-11-30' })
    expect(presetRange('lastMonth', '2026-01-31')).toEqual({ from: '2025-12-01', to: '2025-12-31' })
    expect(presetRange('thisMonth', '2028-02-10')).toEqual({ from: '2028-02-01', to: '2028-02-29' })
    expect(presetRange('thisYear', '2026-06-15')).toEqual({ from: '2026-01-01', to: '2026-12-31' })
  })
})
