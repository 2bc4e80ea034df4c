// Generated from the Rust entity registry by `FINWISE_UPDATE_TS=1 cargo test -p finwise-protocol --test typescript`.
// Do not edit: change crates/finwise-protocol/src/entity.rs (or messages.rs) and regenerate.
import type { EntityType } from "./EntityType";
import type { NackReason } from "./NackReason";

/** Every synced entity type, in the order of the load payload. */
export const ENTITY_TYPES: readonly EntityType[] = [
  "Account",
  "AccountGroup",
  "Category",
  "CategoryGroup",
  "Recipient",
  "Tag",
  "AutomationRule",
  "PlanningTransaction",
  "Transaction",
];

/** The key of each type's list in `initial_data_load.payload`; also the Dexie table name. */
export const COLLECTION: Record<EntityType, string> = {
  Account: "accounts",
  AccountGroup: "account_groups",
  Category: "categories",
  CategoryGroup: "category_groups",
  Recipient: "recipients",
  Tag: "tags",
  AutomationRule: "automation_rules",
  PlanningTransaction: "planning_transactions",
  Transaction: "transactions",
};

/** The fields of each type, `id` first, as the server validates and emits them. */
export const FIELDS: Record<EntityType, readonly string[]> = {
  Account: ["id", "name", "description", "note", "accountType", "isActive", "isOfflineBudget", "accountGroupId", "sortOrder", "iban", "balance", "creditLimit", "offset", "logo_path"],
  AccountGroup: ["id", "name", "sortOrder", "logo_path"],
  Category: ["id", "name", "icon", "budgeted", "activity", "available", "isIncomeCategory", "isHidden", "isActive", "sortOrder", "categoryGroupId", "parentCategoryId", "isSavingsGoal", "goalDate", "targetAmount", "priority", "proportion", "monthlyAmount", "note"],
  CategoryGroup: ["id", "name", "sortOrder", "isIncomeGroup"],
  Recipient: ["id", "name", "defaultCategoryId", "note"],
  Tag: ["id", "name", "parentTagId", "color", "icon"],
  AutomationRule: ["id", "name", "description", "stage", "conditions", "actions", "priority", "isActive", "conditionLogic"],
  PlanningTransaction: ["id", "name", "accountId", "categoryId", "tagIds", "recipientId", "amount", "amountType", "approximateAmount", "minAmount", "maxAmount", "note", "startDate", "valueDate", "endDate", "recurrencePattern", "recurrenceCount", "recurrenceEndType", "executionDay", "weekendHandling", "transactionType", "counterPlanningTransactionId", "transferToAccountId", "transferToCategoryId", "isActive", "forecastOnly", "autoExecute"],
  Transaction: ["id", "accountId", "categoryId", "date", "valueDate", "amount", "description", "note", "tagIds", "type", "runningBalance", "counterTransactionId", "planningTransactionId", "isReconciliation", "isCategoryTransfer", "transferToAccountId", "reconciled", "toCategoryId", "payee", "recipientId", "createdAt"],
};

/** Fields that carry the same value as `updated_at` (Transaction's 0.4 `updatedAt`). */
export const UPDATED_AT_MIRRORS: Partial<Record<EntityType, readonly string[]>> = {
  Transaction: ["updatedAt"],
};

/** NACK reasons a client retries automatically (`NackReason::retryable`). */
export const RETRYABLE_REASONS: readonly NackReason[] = ["storage_error", "overloaded"];
