/** Entity shapes as the app uses them (0.4 wire fields, §9.1 of the 0.4 description). */
import type { Entity } from './sync/entities'

export interface AccountGroup extends Entity {
  name: string
  sortOrder: number
  logo_path?: string | null
}

export const ACCOUNT_TYPES = [
  'giro', 'tagesgeld', 'festgeld', 'spar', 'kreditkarte', 'depot', 'bauspar', 'darlehen',
  'geschaeft', 'gemeinschaft', 'fremdwaehrung', 'virtuell', 'bar', 'sonstiges',
] as const

export interface Account extends Entity {
  name: string
  description?: string | null
  note?: string | null
  accountType?: string
  isActive: boolean
  isOfflineBudget: boolean
  accountGroupId: string
  sortOrder?: number
  iban?: string | null
  balance: number
  creditLimit?: number | null
  offset: number
  logo_path?: string | null
}

export interface CategoryGroup extends Entity {
  name: string
  sortOrder: number
  isIncomeGroup: boolean
}

export interface Category extends Entity {
  name: string
  icon?: string | null
  budgeted: number
  activity: number
  available: number
  isIncomeCategory: boolean
  isHidden: boolean
  isActive: boolean
  sortOrder: number
  categoryGroupId?: string | null
  parentCategoryId?: string | null
  isSavingsGoal?: boolean
  note?: string | null
}

export interface Recipient extends Entity {
  name: string
  defaultCategoryId?: string | null
  note?: string | null
}

export interface Tag extends Entity {
  name: string
  parentTagId?: string | null
  color?: string | null
  icon?: string | null
}

export const TRANSACTION_TYPES = ['EXPENSE', 'INCOME', 'ACCOUNTTRANSFER', 'CATEGORYTRANSFER', 'RECONCILE'] as const

export interface Transaction extends Entity {
  accountId: string
  categoryId?: string | null
  date: string
  valueDate: string
  amount: number
  description?: string
  note?: string | null
  tagIds: string[]
  type: string
  runningBalance: number
  recipientId?: string | null
  payee?: string | null
  createdAt?: string
  updatedAt?: string
}

export function round2(x: number): number {
  return Math.round(x * 100) / 100
}

/** Money by the chosen locale (see `i18n/format.ts`). */
export { formatMoney } from './i18n/format'
