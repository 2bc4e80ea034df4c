import { defineEntityStore } from '../sync/store'
import type {
  Account, AccountGroup, AutomationRule, Category, CategoryGroup, PlanningTransaction, Recipient, Tag, Transaction,
} from '../model'
import { applyRules } from '../rules'
import { incomeTransfers } from '../finance/income'
import { bookCategoryTransfer, ensureAvailableFunds } from './budgeting'

/** One store per entity type, all from the same generic factory. */
export const useAccountGroups = defineEntityStore<AccountGroup>('AccountGroup')
export const useAccounts = defineEntityStore<Account>('Account')
export const useCategoryGroups = defineEntityStore<CategoryGroup>('CategoryGroup')
export const useCategories = defineEntityStore<Category>('Category')
export const useRecipients = defineEntityStore<Recipient>('Recipient')
export const useTags = defineEntityStore<Tag>('Tag')
export const usePlanningTransactions = defineEntityStore<PlanningTransaction>('PlanningTransaction')
export const useAutomationRules = defineEntityStore<AutomationRule>('AutomationRule')
/** Books what 0.4 books into the budget when an income is added, changed or deleted. */
async function moveIncome(before: Transaction | null, after: Transaction | null): Promise<void> {
  const categories = useCategories()
  const transfers = incomeTransfers(before, after, (id) => !!categories.get(id)?.isIncomeCategory)
  if (!transfers.length) return
  const funds = await ensureAvailableFunds()
  for (const x of transfers) {
    const cat = categories.get(x.categoryId)
    if (!cat) continue
    await (x.toFunds ? bookCategoryTransfer(cat, funds, x.amount, x.date, x.note) : bookCategoryTransfer(funds, cat, x.amount, x.date, x.note))
  }
}

/**
 * Transactions follow 0.4's TransactionService: a new one passes the active automation rules first;
 * income in an income category is moved to "Verfügbare Mittel" (and back on changes and deletes);
 * removing one leg of a transfer removes its counter booking.
 */
export const useTransactions = defineEntityStore<Transaction>('Transaction', {
  beforeCreate: (tx) => applyRules(useAutomationRules().list, tx),
  afterCreate: (tx) => moveIncome(null, tx),
  afterUpdate: (before, after) => moveIncome(before, after),
  afterRemove: async (tx) => {
    await moveIncome(tx, null)
    const store = useTransactions()
    const counter = store.get(tx.counterTransactionId)
    if (counter && counter.counterTransactionId === tx.id) await store.remove(counter.id)
  },
})

export function allEntityStores() {
  return [
    useAccountGroups(), useAccounts(), useCategoryGroups(), useCategories(), useRecipients(), useTags(),
    usePlanningTransactions(), useAutomationRules(), useTransactions(),
  ]
}
