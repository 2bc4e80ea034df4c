/** Budget bookings shared by the budget screen and the transaction store's income hook. */
import { AVAILABLE_FUNDS_NAME, type Category } from '../model'
import { isAvailableFunds } from '../finance/budget'
import { buildCategoryTransfer } from '../finance/transfers'
import { useCategories, useTransactions } from './entities'

/** The "Verfügbare Mittel" category, created with 0.4's shape (`ensureAvailableFundsCategory`) when missing. */
export async function ensureAvailableFunds(): Promise<Category> {
  const categories = useCategories()
  const found = categories.list.find(isAvailableFunds)
  if (found) return found
  return categories.save({
    name: AVAILABLE_FUNDS_NAME, icon: null, budgeted: 0, activity: 0, available: 0, isIncomeCategory: false, isHidden: false,
    isActive: true, sortOrder: 9999, categoryGroupId: null, parentCategoryId: null, isSavingsGoal: false,
  })
}

/** Books a linked CATEGORYTRANSFER pair from one category to another. */
export async function bookCategoryTransfer(from: Category, to: Category, amount: number, date: string, note?: string): Promise<void> {
  const legs = buildCategoryTransfer(
    { fromCategoryId: from.id, toCategoryId: to.id, fromName: from.name, toName: to.name, amount, date, note },
    [crypto.randomUUID(), crypto.randomUUID()],
  )
  const transactions = useTransactions()
  for (const leg of legs) await transactions.save(leg)
}
