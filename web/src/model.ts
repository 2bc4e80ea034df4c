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
  counterTransactionId?: string | null
  planningTransactionId?: string | null
  isReconciliation?: boolean
  isCategoryTransfer?: boolean
  transferToAccountId?: string | null
  reconciled?: boolean
  toCategoryId?: string | null
  createdAt?: string
  updatedAt?: string
}

export const RECURRENCE_PATTERNS = ['ONCE', 'DAILY', 'WEEKLY', 'BIWEEKLY', 'MONTHLY', 'QUARTERLY', 'YEARLY'] as const
export const RECURRENCE_END_TYPES = ['NEVER', 'COUNT', 'DATE'] as const
export const WEEKEND_HANDLING = ['NONE', 'BEFORE', 'AFTER'] as const
export const AMOUNT_TYPES = ['EXACT', 'APPROXIMATE', 'RANGE'] as const
export type RecurrencePattern = (typeof RECURRENCE_PATTERNS)[number]
export type RecurrenceEndType = (typeof RECURRENCE_END_TYPES)[number]
export type WeekendHandling = (typeof WEEKEND_HANDLING)[number]

/** A planned (recurring) transaction, `planning_transactions` of 0.4. */
export interface PlanningTransaction extends Entity {
  name: string
  accountId: string
  categoryId?: string | null
  tagIds: string[]
  recipientId?: string | null
  amount: number
  amountType: string
  approximateAmount?: number | null
  minAmount?: number | null
  maxAmount?: number | null
  note?: string | null
  startDate: string
  valueDate?: string | null
  endDate?: string | null
  recurrencePattern: RecurrencePattern
  recurrenceCount?: number | null
  recurrenceEndType: RecurrenceEndType
  executionDay?: number | null
  weekendHandling: WeekendHandling
  transactionType?: string | null
  counterPlanningTransactionId?: string | null
  transferToAccountId?: string | null
  transferToCategoryId?: string | null
  isActive: boolean
  forecastOnly: boolean
  autoExecute?: boolean
}

export const RULE_CONDITION_TYPES = [
  'ACCOUNT_IS', 'RECIPIENT_EQUALS', 'RECIPIENT_CONTAINS', 'AMOUNT_EQUALS', 'AMOUNT_GREATER', 'AMOUNT_LESS',
  'DATE_IS', 'DATE_APPROX', 'DESCRIPTION_CONTAINS',
] as const
export const RULE_ACTION_TYPES = ['SET_CATEGORY', 'ADD_TAG', 'SET_NOTE', 'LINK_SCHEDULE'] as const
export const RULE_STAGES = ['PRE', 'DEFAULT', 'POST'] as const

export interface RuleCondition {
  type: string
  operator: string
  value: string | number
}
export interface RuleAction {
  type: string
  field?: string
  value: string | string[] | number
}

/** An automation rule, `automation_rules` of 0.4. */
export interface AutomationRule extends Entity {
  name: string
  description?: string | null
  stage: string
  conditions: RuleCondition[]
  actions: RuleAction[]
  priority: number
  isActive: boolean
  conditionLogic?: 'all' | 'any'
}

/** The category 0.4 budgets from (`categoryStore.getAvailableFundsCategory`, matched by name). */
export const AVAILABLE_FUNDS_NAME = 'Verfügbare Mittel'

export function round2(x: number): number {
  return Math.round(x * 100) / 100
}

/** Money by the chosen locale (see `i18n/format.ts`). */
export { formatMoney } from './i18n/format'
