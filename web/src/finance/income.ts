/**
 * 0.4 moves income into the budget by itself (`TransactionService.addTransaction`, `updateTransaction`,
 * `deleteTransaction`): an INCOME of a positive amount in an income category books a category
 * transfer of that amount from the income category to "Verfügbare Mittel" on the income's date; a
 * change of its amount books the difference, a move to another month takes the money back on the
 * old date and books it again on the new one, and deleting the income takes it back.
 */
import type { Transaction } from '../model'
import { round2 } from './balances'

export interface IncomeTransfer {
  /** true: income category → available funds; false: back. */
  toFunds: boolean
  categoryId: string
  amount: number
  date: string
  note: string
}

type Tx = Pick<Transaction, 'type' | 'amount' | 'categoryId' | 'date'>

const qualifies = (t: Tx | null | undefined, isIncomeCategory: (id: string) => boolean): t is Tx & { categoryId: string } =>
  !!t && t.type === 'INCOME' && Number(t.amount) > 0 && !!t.categoryId && isIncomeCategory(t.categoryId)

/** The transfers 0.4 books when a transaction goes from `before` to `after` (null: created / deleted). */
export function incomeTransfers(before: Tx | null, after: Tx | null, isIncomeCategory: (id: string) => boolean): IncomeTransfer[] {
  const out: IncomeTransfer[] = []
  if (!before) {
    if (qualifies(after, isIncomeCategory))
      out.push({ toFunds: true, categoryId: after.categoryId, amount: round2(Number(after.amount)), date: after.date, note: 'Automatischer Transfer von Einnahmen' })
    return out
  }
  if (!after) {
    if (qualifies(before, isIncomeCategory))
      out.push({ toFunds: false, categoryId: before.categoryId, amount: round2(Number(before.amount)), date: before.date, note: 'Automatischer Transfer bei Löschung der Einnahme' })
    return out
  }
  // an update: 0.4 looks at the original's type, amount and category
  if (qualifies(before, isIncomeCategory) && before.date.slice(0, 7) !== after.date.slice(0, 7)) {
    const amount = round2(Number(before.amount))
    out.push({ toFunds: false, categoryId: before.categoryId, amount, date: before.date, note: 'Automatischer Rücktransfer wegen Datumsänderung' })
    out.push({ toFunds: true, categoryId: before.categoryId, amount, date: after.date, note: 'Automatischer Transfer wegen Datumsänderung' })
  }
  if (before.type === 'INCOME' && before.categoryId && isIncomeCategory(before.categoryId)) {
    const diff = round2(Number(after.amount) - Number(before.amount))
    if (diff !== 0)
      out.push({ toFunds: diff > 0, categoryId: before.categoryId, amount: Math.abs(diff), date: after.date, note: 'Automatischer Transfer bei Betragsanpassung' })
  }
  return out
}
