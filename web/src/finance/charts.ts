/**
 * The series of the reports screen, computed from the live stores (pure, so they are tested and
 * recomputed on every sync change).
 */
import type { Account, Category, Transaction } from '../model'
import { countsInTotals, monthEndBalances, round2 } from './balances'
import type { BudgetRow } from './budget'
import { dateOnly } from './dates'

export interface Series {
  labels: string[]
  datasets: { label: string; data: number[] }[]
}

/** Spending (positive numbers) per category in month `ym`, largest first; uncategorised spending under `otherLabel`. */
export function spendingByCategory(
  transactions: readonly Transaction[],
  categories: readonly Category[],
  ym: string,
  otherLabel: string,
): Series {
  const names = new Map(categories.map((c) => [c.id, c.name]))
  const sums = new Map<string, number>()
  for (const t of transactions) {
    if (t.type !== 'EXPENSE' || dateOnly(t.valueDate || t.date).slice(0, 7) !== ym) continue
    const key = (t.categoryId && names.get(t.categoryId)) || otherLabel
    sums.set(key, (sums.get(key) ?? 0) - (Number(t.amount) || 0))
  }
  const rows = [...sums].map(([k, v]) => [k, round2(v)] as const).filter(([, v]) => v !== 0)
  rows.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
  return { labels: rows.map((r) => r[0]), datasets: [{ label: ym, data: rows.map((r) => r[1]) }] }
}

/** Budgeted against spent (both positive) per category with either. */
export function budgetVsActual(rows: readonly BudgetRow[], categories: readonly Category[], labels: { budgeted: string; spent: string }): Series {
  const names = new Map(categories.map((c) => [c.id, c.name]))
  const used = rows.filter((r) => r.budgeted !== 0 || r.spent !== 0)
  return {
    labels: used.map((r) => names.get(r.categoryId) ?? '?'),
    datasets: [
      { label: labels.budgeted, data: used.map((r) => r.budgeted) },
      { label: labels.spent, data: used.map((r) => round2(-r.spent)) },
    ],
  }
}

/** Month-end balance per account (active, not offline budgets) over `months`. */
export function balanceOverTime(transactions: readonly Transaction[], accounts: readonly Account[], months: readonly string[]): Series {
  const shown = accounts.filter(countsInTotals).sort((a, b) => a.name.localeCompare(b.name))
  return {
    labels: [...months],
    datasets: shown.map((a) => ({ label: a.name, data: monthEndBalances(transactions, a.id, months) })),
  }
}
