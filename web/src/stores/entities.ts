import { defineEntityStore } from '../sync/store'
import type { Account, AccountGroup, Category, CategoryGroup, Recipient, Tag, Transaction } from '../model'

/** One store per entity type, all from the same generic factory. */
export const useAccountGroups = defineEntityStore<AccountGroup>('AccountGroup')
export const useAccounts = defineEntityStore<Account>('Account')
export const useCategoryGroups = defineEntityStore<CategoryGroup>('CategoryGroup')
export const useCategories = defineEntityStore<Category>('Category')
export const useRecipients = defineEntityStore<Recipient>('Recipient')
export const useTags = defineEntityStore<Tag>('Tag')
export const useTransactions = defineEntityStore<Transaction>('Transaction')

export function allEntityStores() {
  return [
    useAccountGroups(), useAccounts(), useCategoryGroups(), useCategories(), useRecipients(), useTags(), useTransactions(),
  ]
}
