// The vectors the Rust client checks too (crates/finwise-client/src/ledger.rs): every client shows
// the same balances and budget figures for the same data.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { accountBalances } from '../src/finance/balances'
import { budgetRow } from '../src/finance/budget'
import type { Transaction } from '../src/model'

interface Case {
  name: string
  transactions: Transaction[]
  as_of: string
  month: string
  balances: Record<string, number>
  categories: Record<string, { budgeted: number; spent: number; available: number }>
}

const file = path.resolve(__dirname, '../../testdata/ledger-vectors.json')
const cases = (JSON.parse(readFileSync(file, 'utf8')) as { cases: Case[] }).cases

describe('shared ledger vectors', () => {
  it('has cases', () => expect(cases.length).toBeGreaterThan(0))
  for (const c of cases) {
    it(c.name, () => {
      const balances = Object.fromEntries(accountBalances(c.transactions, c.as_of))
      expect(balances).toEqual(c.balances)
      for (const [category, want] of Object.entries(c.categories)) {
        const row = budgetRow(category, c.transactions, [], c.month)
        expect({ budgeted: row.budgeted, spent: row.spent, available: row.available }).toEqual(want)
      }
    })
  }
})
