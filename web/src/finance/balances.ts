/**
 * Account balances as FinWise 0.4 shows them (`BalanceService.getTodayBalance('account')`):
 * the sum of the account's transactions except CATEGORYTRANSFER, dated on or before the day asked
 * for. The stored `Account.balance` is not used (0.4 never maintains it) and `offset` is not added
 * (0.4's "zero line for statistics"). Group and overall totals count active accounts that are not
 * offline budgets. An opening balance is a RECONCILE transaction, as 0.4's reconciliation books it.
 */
import type { Account, Transaction } from '../model'
import { dateOnly, monthEnd } from './dates'

export const round2 = (x: number) => Math.round(x * 100) / 100

/** Whether a transaction moves an account's money (CATEGORYTRANSFER only moves budget). */
export function countsForAccount(t: Pick<Transaction, 'type'>): boolean {
  return t.type !== 'CATEGORYTRANSFER'
}

/** Balance of every account that has transactions, as of `asOf` (inclusive). */
export function accountBalances(transactions: readonly Transaction[], asOf: string): Map<string, number> {
  const m = new Map<string, number>()
  for (const t of transactions) {
    if (!countsForAccount(t) || dateOnly(t.date) > asOf) continue
    m.set(t.accountId, (m.get(t.accountId) ?? 0) + (Number(t.amount) || 0))
  }
  for (const [k, v] of m) m.set(k, round2(v))
  return m
}

export function accountBalance(transactions: readonly Transaction[], accountId: string, asOf: string): number {
  return accountBalances(
    transactions.filter((t) => t.accountId === accountId),
    asOf,
  ).get(accountId) ?? 0
}

/** Whether an account counts in group and overall totals. */
export function countsInTotals(a: Pick<Account, 'isActive' | 'isOfflineBudget'>): boolean {
  return a.isActive !== false && !a.isOfflineBudget
}

export function totalOf(accounts: readonly Account[], balances: Map<string, number>): number {
  return round2(accounts.filter(countsInTotals).reduce((s, a) => s + (balances.get(a.id) ?? 0), 0))
}

/** Balance at the end of each month, per account (`months` ascending, `YYYY-MM`). */
export function monthEndBalances(transactions: readonly Transaction[], accountId: string, months: readonly string[]): number[] {
  const own = transactions
    .filter((t) => t.accountId === accountId && countsForAccount(t))
    .map((t) => [dateOnly(t.date), Number(t.amount) || 0] as const)
    .sort((a, b) => a[0].localeCompare(b[0]))
  const out: number[] = []
  let i = 0
  let sum = 0
  for (const m of months) {
    const end = monthEnd(m)
    while (i < own.length && own[i][0] <= end) sum += own[i++][1]
    out.push(round2(sum))
  }
  return out
}

/**
 * The transaction 0.4's reconciliation books to bring an account from `current` to `actual` on
 * `date` (`TransactionService.addReconcileTransaction`); null when they agree. Opening balances are
 * this with `current = 0`.
 */
export function reconcileTransaction(opts: {
  accountId: string
  current: number
  actual: number
  date: string
  categoryId?: string | null
  note?: string
}): Omit<Transaction, 'id' | 'updated_at'> | null {
  const amount = round2(opts.actual - opts.current)
  if (amount === 0) return null
  return {
    type: 'RECONCILE',
    accountId: opts.accountId,
    categoryId: opts.categoryId ?? null,
    date: opts.date,
    valueDate: opts.date,
    amount,
    description: '',
    note: opts.note ?? (amount > 0 ? 'Korrektur Gutschrift' : 'Korrektur Belastung'),
    tagIds: [],
    payee: 'Kontoabgleich',
    runningBalance: round2(opts.actual),
    counterTransactionId: null,
    planningTransactionId: null,
    isReconciliation: true,
    isCategoryTransfer: false,
    reconciled: true,
  }
}
