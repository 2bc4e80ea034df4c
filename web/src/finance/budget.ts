/**
 * Budgets as 0.4 keeps them (`BudgetService`): money is assigned to a category by a CATEGORYTRANSFER
 * pair from the "Verfügbare Mittel" category, dated the month's last day. Per category and month
 * (by `valueDate`):
 * - budgeted = Σ CATEGORYTRANSFER amounts of the category in the month;
 * - spent    = Σ EXPENSE and INCOME amounts of the category in the month (spending is negative);
 * - forecast = Σ plan amount × occurrences in the month, of the active plans of the category;
 * - available = the category's balance at the month's end (every transaction of the category up to
 *   then) plus the planned occurrences up to then, i.e. last month's available + budgeted + spent + forecast.
 */
import type { Category, PlanningTransaction, Transaction } from '../model'
import { AVAILABLE_FUNDS_NAME } from '../model'
import { round2 } from './balances'
import { dateOnly, monthEnd, monthStart } from './dates'
import { occurrences } from './planning'

export interface BudgetRow {
  categoryId: string
  budgeted: number
  spent: number
  forecast: number
  available: number
}

export function isAvailableFunds(c: Pick<Category, 'name'>): boolean {
  return c.name === AVAILABLE_FUNDS_NAME
}

function plannedUntil(plans: readonly PlanningTransaction[], categoryId: string, from: string, to: string): number {
  let s = 0
  for (const p of plans) {
    if (!p.isActive || p.categoryId !== categoryId) continue
    s += (Number(p.amount) || 0) * occurrences(p, from, to).length
  }
  return s
}

export function budgetRow(
  categoryId: string,
  transactions: readonly Transaction[],
  plans: readonly PlanningTransaction[],
  ym: string,
): BudgetRow {
  const start = monthStart(ym)
  const end = monthEnd(ym)
  let budgeted = 0
  let spent = 0
  let balance = 0
  for (const t of transactions) {
    if (t.categoryId !== categoryId) continue
    const d = dateOnly(t.valueDate || t.date)
    if (d > end) continue
    const amount = Number(t.amount) || 0
    balance += amount
    if (d < start) continue
    if (t.type === 'CATEGORYTRANSFER') budgeted += amount
    else if (t.type === 'EXPENSE' || t.type === 'INCOME') spent += amount
  }
  const forecast = plannedUntil(plans, categoryId, start, end)
  const plannedBefore = plannedUntil(plans, categoryId, '0000-01-01', end)
  return {
    categoryId,
    budgeted: round2(budgeted),
    spent: round2(spent),
    forecast: round2(forecast),
    available: round2(balance + plannedBefore),
  }
}

/** Rows of every active, visible category except the available-funds one. */
export function budgetMonth(
  categories: readonly Category[],
  transactions: readonly Transaction[],
  plans: readonly PlanningTransaction[],
  ym: string,
): BudgetRow[] {
  return categories
    .filter((c) => c.isActive !== false && !c.isHidden && !isAvailableFunds(c))
    .map((c) => budgetRow(c.id, transactions, plans, ym))
}

/**
 * The category transfer that changes `categoryId`'s budget for the month from `current` to `target`:
 * the difference, from the available funds to the category (or back), dated the month's last day.
 */
export function budgetChange(current: number, target: number, ym: string): { amount: number; toCategory: boolean; date: string } | null {
  const diff = round2(target - current)
  if (diff === 0) return null
  return { amount: Math.abs(diff), toCategory: diff > 0, date: monthEnd(ym) }
}
