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

export interface BudgetLine extends BudgetRow {
  /** 0 for a top category, 1 for its children, … */
  depth: number
  /** The category's own figures (the aggregate above adds its active children, as 0.4 shows it). */
  own: BudgetRow
}

/**
 * The lines of one list of categories for month `ym`, each parent followed by its children, with
 * 0.4's aggregation (`getAggregatedMonthlyBudgetData`): a parent's figures include those of its
 * active children, recursively. `all` is every category (children are looked up there).
 */
export function budgetLines(
  shown: readonly Category[],
  all: readonly Category[],
  transactions: readonly Transaction[],
  plans: readonly PlanningTransaction[],
  ym: string,
): BudgetLine[] {
  const own = new Map<string, BudgetRow>()
  const ownRow = (id: string) => {
    let r = own.get(id)
    if (!r) own.set(id, (r = budgetRow(id, transactions, plans, ym)))
    return r
  }
  const children = (id: string) => all.filter((c) => c.parentCategoryId === id).sort((a, b) => a.sortOrder - b.sortOrder || a.name.localeCompare(b.name))
  const aggregate = (id: string, seen = new Set<string>()): BudgetRow => {
    const r = { ...ownRow(id) }
    seen.add(id)
    for (const c of children(id)) {
      if (c.isActive === false || seen.has(c.id)) continue
      const x = aggregate(c.id, seen)
      r.budgeted += x.budgeted
      r.spent += x.spent
      r.forecast += x.forecast
      r.available += x.available
    }
    return { ...r, budgeted: round2(r.budgeted), spent: round2(r.spent), forecast: round2(r.forecast), available: round2(r.available) }
  }
  const shownIds = new Set(shown.map((c) => c.id))
  const out: BudgetLine[] = []
  const placed = new Set<string>()
  const place = (c: Category, depth: number) => {
    if (placed.has(c.id)) return
    placed.add(c.id)
    out.push({ ...aggregate(c.id), depth, own: ownRow(c.id) })
    for (const child of children(c.id)) if (shownIds.has(child.id)) place(child, depth + 1)
  }
  for (const c of shown) if (!c.parentCategoryId || !shownIds.has(c.parentCategoryId)) place(c, 0)
  for (const c of shown) place(c, 0) // in a cycle of parents: listed once, at the top
  return out
}
