/**
 * Transfers as 0.4 books them (`TransactionService.addAccountTransfer` / `addCategoryTransfer`):
 * two transactions linked both ways by `counterTransactionId`, the source leg negative, the target
 * leg positive. Account transfers are `ACCOUNTTRANSFER` with `transferToAccountId` naming the other
 * account; category transfers (budget assignments) are `CATEGORYTRANSFER` with `accountId: ""`,
 * `isCategoryTransfer: true` and `toCategoryId` naming the other category.
 */
import type { Transaction } from '../model'
import { round2 } from './balances'

export type NewTransaction = Transaction

export interface AccountTransferInput {
  fromAccountId: string
  toAccountId: string
  fromName: string
  toName: string
  amount: number
  date: string
  valueDate?: string | null
  note?: string | null
}

export function validateAccountTransfer(i: Partial<AccountTransferInput>): string[] {
  const errors: string[] = []
  if (!i.fromAccountId) errors.push('fromRequired')
  if (!i.toAccountId) errors.push('toRequired')
  if (i.fromAccountId && i.fromAccountId === i.toAccountId) errors.push('sameAccount')
  if (!Number.isFinite(i.amount) || !i.amount) errors.push('amountRequired')
  if (!i.date) errors.push('dateRequired')
  return errors
}

/** The fields of both legs that follow from the input (used for a new transfer and for an edit). */
export function accountTransferFields(i: AccountTransferInput): [Partial<Transaction>, Partial<Transaction>] {
  const abs = round2(Math.abs(i.amount))
  const common = {
    type: 'ACCOUNTTRANSFER',
    date: i.date,
    valueDate: i.valueDate || i.date,
    note: i.note || null,
    categoryId: null,
  }
  return [
    { ...common, accountId: i.fromAccountId, amount: -abs, transferToAccountId: i.toAccountId, payee: `Transfer zu ${i.toName}` },
    { ...common, accountId: i.toAccountId, amount: abs, transferToAccountId: i.fromAccountId, payee: `Transfer von ${i.fromName}` },
  ]
}

const LEG_DEFAULTS = {
  description: '',
  tagIds: [] as string[],
  runningBalance: 0,
  planningTransactionId: null,
  isReconciliation: false,
  reconciled: false,
  recipientId: null,
}

/** Both legs of a new account transfer, ids chosen up front so each can name the other. */
export function buildAccountTransfer(i: AccountTransferInput, ids: [string, string]): [NewTransaction, NewTransaction] {
  const [from, to] = accountTransferFields(i)
  return [
    { ...LEG_DEFAULTS, isCategoryTransfer: false, ...from, id: ids[0], counterTransactionId: ids[1] } as NewTransaction,
    { ...LEG_DEFAULTS, isCategoryTransfer: false, ...to, id: ids[1], counterTransactionId: ids[0] } as NewTransaction,
  ]
}

export interface CategoryTransferInput {
  fromCategoryId: string
  toCategoryId: string
  fromName: string
  toName: string
  amount: number
  date: string
  note?: string | null
}

export function buildCategoryTransfer(i: CategoryTransferInput, ids: [string, string]): [NewTransaction, NewTransaction] {
  const abs = round2(Math.abs(i.amount))
  const common = {
    ...LEG_DEFAULTS,
    type: 'CATEGORYTRANSFER',
    accountId: '',
    date: i.date,
    valueDate: i.date,
    note: i.note || null,
    isCategoryTransfer: true,
    transferToAccountId: null,
  }
  return [
    {
      ...common, id: ids[0], counterTransactionId: ids[1], categoryId: i.fromCategoryId, toCategoryId: i.toCategoryId,
      amount: -abs, payee: `Kategorientransfer zu ${i.toName}`,
    } as NewTransaction,
    {
      ...common, id: ids[1], counterTransactionId: ids[0], categoryId: i.toCategoryId, toCategoryId: i.fromCategoryId,
      amount: abs, payee: `Kategorientransfer von ${i.fromName}`,
    } as NewTransaction,
  ]
}

export interface TransferPair {
  /** The negative (source) leg. */
  from: Transaction
  /** The positive (target) leg; missing while it has not arrived (or was lost). */
  to?: Transaction
}

/** Account transfers as pairs (each pair once, source leg first), newest first. */
export function accountTransferPairs(transactions: readonly Transaction[]): TransferPair[] {
  const byId = new Map(transactions.map((t) => [t.id, t]))
  const seen = new Set<string>()
  const out: TransferPair[] = []
  for (const t of transactions) {
    if (t.type !== 'ACCOUNTTRANSFER' || seen.has(t.id)) continue
    const other = t.counterTransactionId ? byId.get(t.counterTransactionId) : undefined
    seen.add(t.id)
    if (other) seen.add(other.id)
    const [from, to] = other && Number(other.amount) < Number(t.amount) ? [other, t] : [t, other]
    out.push({ from, to })
  }
  return out.sort((a, b) => b.from.date.localeCompare(a.from.date) || a.from.id.localeCompare(b.from.id))
}
