/**
 * Occurrences of planned transactions as 0.4 computes them (`PlanningService.calculateNextOccurrences`):
 * from `startDate`, step by the pattern (MONTHLY with `executionDay` jumps to that day of the next
 * month, clamped), shift each date off the weekend by `weekendHandling` (the stepping continues from
 * the unshifted date), stop after `recurrenceCount` occurrences (COUNT, counted from `startDate`),
 * after `endDate` (DATE), or 24 months after the window start (NEVER). ONCE is `startDate` alone.
 */
import type { PlanningTransaction, Transaction } from '../model'
import { addDays, addMonths, dateOnly, fmt, parseDate, daysInMonth, weekday } from './dates'

export type PlanShape = Pick<
  PlanningTransaction,
  'isActive' | 'startDate' | 'endDate' | 'recurrencePattern' | 'recurrenceEndType' | 'recurrenceCount' | 'executionDay' | 'weekendHandling'
>

export function applyWeekendHandling(date: string, handling: string | null | undefined): string {
  const wd = weekday(date)
  if ((wd !== 0 && wd !== 6) || !handling || handling === 'NONE') return date
  const saturday = wd === 6
  if (handling === 'BEFORE') return addDays(date, saturday ? -1 : -2)
  if (handling === 'AFTER') return addDays(date, saturday ? 2 : 1)
  return date
}

function step(date: string, plan: PlanShape): string | null {
  switch (plan.recurrencePattern) {
    case 'DAILY':
      return addDays(date, 1)
    case 'WEEKLY':
      return addDays(date, 7)
    case 'BIWEEKLY':
      return addDays(date, 14)
    case 'MONTHLY': {
      const day = plan.executionDay
      if (day && day > 0 && day <= 31) {
        const next = parseDate(addMonths(date, 1))
        return fmt(next.y, next.m, Math.min(day, daysInMonth(next.y, next.m)))
      }
      return addMonths(date, 1)
    }
    case 'QUARTERLY':
      return addMonths(date, 3)
    case 'YEARLY':
      return addMonths(date, 12)
    default:
      return null
  }
}

/** The dates (`YYYY-MM-DD`) on which `plan` falls within [from, to]. */
export function occurrences(plan: PlanShape, from: string, to: string): string[] {
  if (!plan.isActive) return []
  const start = dateOnly(plan.startDate)
  const end = plan.endDate ? dateOnly(plan.endDate) : null
  if (start > to) return []
  if (end && end < from) return []
  const out: string[] = []
  if (plan.recurrencePattern === 'ONCE') {
    const d = applyWeekendHandling(start, plan.weekendHandling)
    if (d >= from && d <= to) out.push(d)
    return out
  }
  const horizon = addMonths(from, 24)
  let current = start
  let count = 1
  while (current <= to && count < 1000) {
    const d = applyWeekendHandling(current, plan.weekendHandling)
    if (d >= from && d <= to) out.push(d)
    if (plan.recurrenceEndType === 'NEVER' && d > horizon) break
    if (plan.recurrenceEndType === 'COUNT' && plan.recurrenceCount != null && count >= plan.recurrenceCount) break
    count++
    const next = step(current, plan)
    if (!next) return out
    current = next
    if (plan.recurrenceEndType === 'DATE' && end && current > end) break
  }
  return out
}

/** The next `n` due dates on or after `today` (within two years). */
export function nextDueDates(plan: PlanShape, today: string, n = 3): string[] {
  return occurrences(plan, today, addMonths(today, 24)).slice(0, n)
}

/** 0.4's default transaction type of a plan (`PlanningService.addPlanningTransaction`). */
export function planTransactionType(p: Pick<PlanningTransaction, 'amount' | 'transferToAccountId' | 'transferToCategoryId'>): string {
  if (p.transferToCategoryId) return 'CATEGORYTRANSFER'
  if (p.transferToAccountId) return 'ACCOUNTTRANSFER'
  return p.amount < 0 ? 'EXPENSE' : 'INCOME'
}

export interface PlanInput {
  name: string
  accountId: string
  amount: number
  startDate: string
  recurrencePattern: string
  recurrenceEndType: string
  recurrenceCount?: number | null
  endDate?: string | null
}

/** Validation message keys (`planning.errors.*`) for a plan form. */
export function validatePlan(p: PlanInput): string[] {
  const e: string[] = []
  if (!p.name.trim()) e.push('nameRequired')
  if (!p.accountId) e.push('accountRequired')
  if (!Number.isFinite(p.amount) || p.amount === 0) e.push('amountRequired')
  if (!/^\d{4}-\d{2}-\d{2}$/.test(p.startDate)) e.push('startRequired')
  if (p.recurrencePattern !== 'ONCE' && p.recurrenceEndType === 'COUNT' && !(Number(p.recurrenceCount) >= 1)) e.push('countRequired')
  if (p.recurrencePattern !== 'ONCE' && p.recurrenceEndType === 'DATE') {
    if (!p.endDate) e.push('endRequired')
    else if (p.endDate < p.startDate) e.push('endBeforeStart')
  }
  return e
}

/**
 * What booking a plan's occurrence on `date` does (0.4 `PlanningService.executePlanningTransaction`):
 * the plan is deleted when it was its last occurrence (ONCE, the end date, or no occurrence left of a
 * COUNT plan), else its `startDate` moves to the next occurrence (and a COUNT plan counts one down, as
 * 0.4's skip does, so that it ends). The booking itself is built by the caller (see `plannedBooking`).
 */
export function afterBooking(
  plan: PlanShape,
  date: string,
): { delete: true } | { delete: false; changes: Partial<PlanningTransaction> } {
  const later = occurrences(plan, addDays(date, 1), addMonths(date, 120))
  const last =
    plan.recurrencePattern === 'ONCE' ||
    (plan.recurrenceEndType === 'DATE' && !!plan.endDate && dateOnly(plan.endDate) === date) ||
    (plan.recurrenceEndType === 'COUNT' && plan.recurrenceCount != null && later.length === 0)
  if (last) return { delete: true }
  const next = occurrences(plan, addDays(date, 1), addMonths(date, 36))[0]
  const changes: Partial<PlanningTransaction> = {}
  if (next) changes.startDate = next
  if (plan.recurrenceEndType === 'COUNT' && plan.recurrenceCount && plan.recurrenceCount > 0) changes.recurrenceCount = plan.recurrenceCount - 1
  return { delete: false, changes }
}

/** The real transaction 0.4 books for an income or expense plan on `date`. */
export function plannedBooking(plan: PlanningTransaction, date: string, payee: string | null): Omit<Transaction, 'id' | 'updated_at'> {
  return {
    type: plan.amount < 0 ? 'EXPENSE' : 'INCOME',
    accountId: plan.accountId,
    categoryId: plan.categoryId ?? null,
    date,
    valueDate: plan.valueDate || date,
    amount: plan.amount,
    description: plan.name,
    note: plan.note || null,
    tagIds: [...(plan.tagIds ?? [])],
    payee,
    recipientId: plan.recipientId ?? null,
    planningTransactionId: plan.id,
    counterTransactionId: null,
    isReconciliation: false,
    isCategoryTransfer: false,
    reconciled: false,
    runningBalance: 0,
  }
}

/**
 * The counter plan 0.4 keeps for a transfer plan (`createCounterPlanning`): the same schedule,
 * `"<name> (Gegenbuchung)"`, the amount negated, the accounts (or categories) swapped, linked back
 * by `counterPlanningTransactionId`.
 */
export function counterPlan(main: PlanningTransaction): Omit<PlanningTransaction, 'id' | 'updated_at'> {
  const account = main.transactionType === 'ACCOUNTTRANSFER'
  return {
    name: `${main.name} (Gegenbuchung)`,
    transactionType: main.transactionType,
    accountId: account ? main.transferToAccountId ?? '' : main.accountId,
    transferToAccountId: account ? main.accountId : null,
    categoryId: account ? null : main.transferToCategoryId ?? null,
    transferToCategoryId: account ? null : main.categoryId ?? null,
    recipientId: null,
    tagIds: [...(main.tagIds ?? [])],
    amount: -main.amount,
    amountType: main.amountType,
    approximateAmount: main.approximateAmount ?? null,
    minAmount: main.minAmount ?? null,
    maxAmount: main.maxAmount ?? null,
    note: main.note ?? null,
    startDate: main.startDate,
    valueDate: main.valueDate ?? null,
    endDate: main.endDate ?? null,
    recurrencePattern: main.recurrencePattern,
    recurrenceEndType: main.recurrenceEndType,
    recurrenceCount: main.recurrenceCount ?? null,
    executionDay: main.executionDay ?? null,
    weekendHandling: main.weekendHandling,
    isActive: main.isActive,
    forecastOnly: main.forecastOnly,
    autoExecute: main.autoExecute ?? false,
    counterPlanningTransactionId: main.id,
  }
}
