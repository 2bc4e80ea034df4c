/**
 * Automation rules as 0.4 applies them (`ruleStore.applyRulesToTransaction`, called by
 * `TransactionService.addTransaction` on every new transaction): the active rules of a stage
 * (DEFAULT unless said) in ascending `priority`; each rule whose conditions hold (all of them, or
 * any with `conditionLogic: "any"`; no conditions = always) applies its actions to the result so far.
 *
 * Matching follows 0.4 with two deliberate widenings: DESCRIPTION_CONTAINS looks at `description`
 * as well as `note` (0.4 looks at `note` only, while its form calls the field a description), and
 * RECIPIENT_CONTAINS at the payee name as well as `recipientId` (0.4 compares the id).
 */
import type { AutomationRule, RuleAction, RuleCondition, Transaction } from './model'

type Tx = Pick<Transaction, 'accountId' | 'amount' | 'date'> & Partial<Transaction>

const contains = (hay: string | null | undefined, needle: unknown) =>
  !!hay && hay.toLowerCase().includes(String(needle ?? '').toLowerCase())

export function conditionHolds(c: RuleCondition, tx: Tx): boolean {
  switch (c.type) {
    case 'ACCOUNT_IS':
      return tx.accountId === c.value
    case 'RECIPIENT_EQUALS':
      return (tx.recipientId ?? null) === c.value
    case 'RECIPIENT_CONTAINS':
      return contains(tx.recipientId, c.value) || contains(tx.payee, c.value)
    case 'AMOUNT_EQUALS':
      return Number(tx.amount) === Number(c.value)
    case 'AMOUNT_GREATER':
      return Number(tx.amount) > Number(c.value)
    case 'AMOUNT_LESS':
      return Number(tx.amount) < Number(c.value)
    case 'DATE_IS':
      return tx.date === c.value
    case 'DESCRIPTION_CONTAINS':
      return String(c.value ?? '') !== '' && (contains(tx.description, c.value) || contains(tx.note, c.value))
    default:
      return false
  }
}

export function ruleMatches(rule: Pick<AutomationRule, 'conditions' | 'conditionLogic'>, tx: Tx): boolean {
  const conds = Array.isArray(rule.conditions) ? rule.conditions : []
  if (!conds.length) return true
  return rule.conditionLogic === 'any' ? conds.some((c) => conditionHolds(c, tx)) : conds.every((c) => conditionHolds(c, tx))
}

export function applyActions<T extends Tx>(actions: readonly RuleAction[], tx: T): T {
  const out = { ...tx }
  for (const a of actions) {
    if (a.type === 'SET_CATEGORY') out.categoryId = String(a.value)
    else if (a.type === 'SET_NOTE') out.note = String(a.value)
    else if (a.type === 'ADD_TAG') {
      const add = Array.isArray(a.value) ? a.value.map(String) : [String(a.value)]
      out.tagIds = [...new Set([...(out.tagIds ?? []), ...add])]
    }
  }
  return out
}

/** The transaction after the active rules of `stage`; rules only apply to account bookings (not budget transfers). */
export function applyRules<T extends Tx>(rules: readonly AutomationRule[], tx: T, stage = 'DEFAULT'): T {
  if (tx.type === 'CATEGORYTRANSFER') return tx
  const active = rules
    .filter((r) => r.isActive && (r.stage ?? 'DEFAULT') === stage)
    .sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0))
  let out = tx
  for (const r of active) if (ruleMatches(r, out)) out = applyActions(Array.isArray(r.actions) ? r.actions : [], out)
  return out
}
