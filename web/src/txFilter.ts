/**
 * The transaction list's filter, pure: a text search over what a row shows (description,
 * recipient or payee, note, category, account, tags, amount), a date range (inclusive, wire dates
 * `YYYY-MM-DD`), an account, the quick date presets and the sum of what is left.
 */
import type { Transaction } from './model'

export interface TxFilter {
  text: string
  /** Inclusive bounds, `YYYY-MM-DD`; empty for none. */
  from: string
  to: string
  accountId: string
}

export const EMPTY_FILTER: TxFilter = { text: '', from: '', to: '', accountId: '' }

/** Names of what a transaction refers to (undefined when unknown). */
export interface TxNames {
  account(id: string): string | undefined
  category(id: string): string | undefined
  recipient(id: string): string | undefined
  tag(id: string): string | undefined
}

/**
 * A search word that looks like an amount, as the prefix of `abs(amount).toFixed(2)`: `12` finds
 * 12.00 and 12.50 (and 120), `12,5` and `12.5` find 12.50, `1.234,50` finds 1234.50; a sign is ignored.
 */
export function amountPrefix(word: string): string | null {
  if (!/^[-+]?\d[\d.,]*$/.test(word)) return null
  let q = word.replace(/^[-+]/, '')
  if (q.includes(',')) q = q.replace(/\./g, '').replace(',', '.') // German: 1.234,50
  else if (/^\d{1,3}(\.\d{3})+$/.test(q)) q = q.replace(/\./g, '') // German thousands without cents: 1.234
  return /^\d+(\.\d*)?$/.test(q) ? q : null
}

/** An amount as typed, in German or English writing (`-1.234,50`, `1234.5`, `12`); null if it is none. */
export function parseAmount(text: string): number | null {
  const w = text.trim().replace(/\s/g, '')
  const p = amountPrefix(w)
  if (p === null || p.endsWith('.')) return null
  const x = Number(p)
  return Number.isFinite(x) ? (w.startsWith('-') ? -x : x) : null
}

function haystack(t: Transaction, n: TxNames): string {
  return [
    t.description, t.payee, t.note, n.recipient(t.recipientId ?? ''), n.category(t.categoryId ?? ''), n.account(t.accountId),
    ...(t.tagIds ?? []).map((id) => n.tag(id)),
  ]
    .filter(Boolean)
    .join('\n')
    .toLocaleLowerCase()
}

/** Every word of the query must be found in the row's text or, for a number, in its amount. */
export function matchesText(t: Transaction, query: string, n: TxNames): boolean {
  const words = query.toLocaleLowerCase().split(/\s+/).filter(Boolean)
  if (!words.length) return true
  const text = haystack(t, n)
  const amount = Math.abs(Number(t.amount)).toFixed(2)
  return words.every((w) => {
    if (text.includes(w)) return true
    const p = amountPrefix(w)
    return p !== null && amount.startsWith(p)
  })
}

export function matches(t: Transaction, f: TxFilter, n: TxNames): boolean {
  if (f.accountId && t.accountId !== f.accountId) return false
  const day = t.date.slice(0, 10)
  if (f.from && day < f.from) return false
  if (f.to && day > f.to) return false
  return matchesText(t, f.text, n)
}

/** The filtered transactions, newest first (same date: the later created first). */
export function filterTransactions(list: readonly Transaction[], f: TxFilter, n: TxNames): Transaction[] {
  return list
    .filter((t) => matches(t, f, n))
    .sort((a, b) => b.date.localeCompare(a.date) || String(b.createdAt ?? '').localeCompare(String(a.createdAt ?? '')))
}

/** The sum of the amounts, in cents to avoid binary fractions, as euros. */
export function sumAmounts(list: readonly Transaction[]): number {
  return list.reduce((s, t) => s + Math.round(Number(t.amount) * 100), 0) / 100
}

export type Preset = 'thisMonth' | 'lastMonth' | 'thisYear'
export const PRESETS: readonly Preset[] = ['thisMonth', 'lastMonth', 'thisYear']

const iso = (y: number, m: number, d: number) => new Date(Date.UTC(y, m, d)).toISOString().slice(0, 10)

/** The inclusive date range of a preset, seen from `today` (`YYYY-MM-DD`). */
export function presetRange(preset: Preset, today: string): { from: string; to: string } {
  const y = Number(today.slice(0, 4))
  const m = Number(today.slice(5, 7)) - 1
  switch (preset) {
    case 'thisMonth':
      return { from: iso(y, m, 1), to: iso(y, m + 1, 0) }
    case 'lastMonth':
      return { from: iso(y, m - 1, 1), to: iso(y, m, 0) }
    case 'thisYear':
      return { from: iso(y, 0, 1), to: iso(y, 11, 31) }
  }
}
