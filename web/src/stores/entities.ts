import { defineEntityStore } from '../sync/store'
import type {
  Account, AccountGroup, AutomationRule, Category, CategoryGroup, PlanningTransaction, Recipient, Tag, Transaction,
} from '../model'
import { applyRules } from '../rules'

/** One store per entity type, all from the same generic factory. */
export const useAccountGroups = defineEntityStore<AccountGroup>('AccountGroup')
export const useAccounts = defineEntityStore<Account>('Account')
export const useCategoryGroups = defineEntityStore<CategoryGroup>('CategoryGroup')
export const useCategories = defineEntityStore<Category>('Category')
export const useRecipients = defineEntityStore<Recipient>('Recipient')
export const useTags = defineEntityStore<Tag>('Tag')
export const usePlanningTransactions = defineEntityStore<PlanningTransaction>('PlanningTransaction')
export const useAutomationRules = defineEntityStore<AutomationRule>('AutomationRule')
/** A new transaction passes the active automation rules first, as 0.4 applies them on every add;
 * removing one leg of a transfer removes its counter booking, as 0.4's deleteTransaction does. */
export const useTransactions = defineEntityStore<Transaction>('Transaction', {
  beforeCreate: (tx) => applyRules(useAutomationRules().list, tx),
  afterRemove: async (tx) => {
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
