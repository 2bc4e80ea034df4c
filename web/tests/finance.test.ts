import { describe, expect, it } from 'vitest'
import type { Account, AutomationRule, Category, PlanningTransaction, Transaction } from '../src/model'
import { accountBalance, accountBalances, monthEndBalances, reconcileTransaction, totalOf } from '../src/finance/balances'
import { addMonths, monthEnd, monthsBetween, shiftMonth } from '../src/finance/dates'
import { accountTransferPairs, buildAccountTransfer, buildCategoryTransfer, validateAccountTransfer } from '../src/finance/transfers'
import { budgetChange, budgetMonth, budgetRow } from '../src/finance/budget'
import { afterBooking, applyWeekendHandling, counterPlan, nextDueDates, plannedBooking, occurrences, planTransactionType, validatePlan, type PlanShape } from '../src/finance/planning'
import { applyRules, conditionHolds, ruleMatches } from '../src/rules'
import { balanceOverTime, budgetVsActual, spendingByCategory } from '../src/finance/charts'

let n = 0
function tx(p: Partial<Transaction>): Transaction {
  return {
    id: `t${++n}`, accountId: 'a1', date: '2026-11-10', valueDate: p.date ?? '2026-11-10', amount: 0, tagIds: [], type: 'EXPENSE',
    runningBalance: 0, updated_at: '', ...p,
  } as Transaction
}
const acc = (id: string, extra: Partial<Account> = {}) =>
  ({ id, name: id.toUpperCase(), isActive: true, isOfflineBudget: false, accountGroupId: 'g', balance: 999, offset: 50, ...extra }) as Account
const cat = (id: string, name = id, extra: Partial<Category> = {}) =>
  ({ id, name, budgeted: 0, activity: 0, available: 0, isIncomeCategory: false, isHidden: false, isActive: true, sortOrder: 0, ...extra }) as Category

describe('dates', () => {
  it('clamps month steps and lists months', () => {
    expect(addMonths('2026-01-31', 1)).toBe('2026-02-28')
    expect(addMonths('2024-01-31', 1)).toBe('2024-02-29')
    expect(addMonths('2026-11-15', 3)).toBe('2027-02-15')
    expect(monthEnd('2026-02')).toBe('2026-02-28')
    expect(shiftMonth('2026-01', -1)).toBe('2025-12')
    expect(monthsBetween('2026-11', '2027-02')).toEqual(['2026-11', '2026-12', '2027-01', '2027-02'])
  })
})

describe('balances (0.4 rule)', () => {
  const txs = [
    tx({ accountId: 'a1', amount: 100, type: 'INCOME', date: '2026-11-01' }),
    tx({ accountId: 'a1', amount: -30.1, date: '2026-11-05' }),
    tx({ accountId: 'a1', amount: -20, date: '2026-12-01' }), // future
    tx({ accountId: '', categoryId: 'c', amount: 500, type: 'CATEGORYTRANSFER', date: '2026-11-02' }),
    tx({ accountId: 'a1', amount: 40, type: 'CATEGORYTRANSFER', date: '2026-11-02' }), // never counts for accounts
    tx({ accountId: 'a2', amount: -0.1, date: '2026-11-03' }),
    tx({ accountId: 'a2', amount: -0.2, date: '2026-11-03' }),
  ]
  it('sums non-CATEGORYTRANSFER transactions up to the day, ignoring the stored balance and offset', () => {
    expect(accountBalance(txs, 'a1', '2026-11-30')).toBe(69.9)
    expect(accountBalance(txs, 'a1', '2026-12-01')).toBe(49.9)
    expect(accountBalance(txs, 'a1', '2026-11-04')).toBe(100)
    expect(accountBalances(txs, '2026-11-30').get('a2')).toBe(-0.3)
  })
  it('totals only active accounts that are not offline budgets', () => {
    const b = accountBalances(txs, '2026-11-30')
    expect(totalOf([acc('a1'), acc('a2')], b)).toBe(69.6)
    expect(totalOf([acc('a1'), acc('a2', { isOfflineBudget: true })], b)).toBe(69.9)
    expect(totalOf([acc('a1', { isActive: false }), acc('a2')], b)).toBe(-0.3)
  })
  it('month-end balances', () => {
    expect(monthEndBalances(txs, 'a1', ['2026-10', '2026-11', '2026-12'])).toEqual([0, 69.9, 49.9])
  })
  it('an opening balance is a RECONCILE of the difference, as 0.4 reconciles', () => {
    const r = reconcileTransaction({ accountId: 'a1', current: 0, actual: 1234.5, date: '2026-11-01' })!
    expect(r).toMatchObject({ type: 'RECONCILE', amount: 1234.5, isReconciliation: true, reconciled: true, payee: 'Kontoabgleich' })
    expect(reconcileTransaction({ accountId: 'a1', current: 10, actual: 4, date: '2026-11-01' })!.amount).toBe(-6)
    expect(reconcileTransaction({ accountId: 'a1', current: 10, actual: 10, date: '2026-11-01' })).toBeNull()
    // and it counts in the balance
    expect(accountBalance([tx({ ...r, id: 'r' })], 'a1', '2026-11-01')).toBe(1234.5)
  })
})

describe('transfers', () => {
  const input = { fromAccountId: 'a1', toAccountId: 'a2', fromName: 'Giro', toName: 'Spar', amount: -250, date: '2026-11-10' }
  it('builds two linked ACCOUNTTRANSFER legs with opposite signs', () => {
    const [f, t] = buildAccountTransfer(input, ['x', 'y'])
    expect(f).toMatchObject({ id: 'x', counterTransactionId: 'y', accountId: 'a1', amount: -250, transferToAccountId: 'a2', type: 'ACCOUNTTRANSFER', payee: 'Transfer zu Spar', valueDate: '2026-11-10' })
    expect(t).toMatchObject({ id: 'y', counterTransactionId: 'x', accountId: 'a2', amount: 250, transferToAccountId: 'a1', payee: 'Transfer von Giro' })
    const b = accountBalances([f, t] as Transaction[], '2026-11-30')
    expect(b.get('a1')! + b.get('a2')!).toBe(0)
    expect(accountTransferPairs([t, f] as Transaction[])).toEqual([{ from: f, to: t }])
  })
  it('validates', () => {
    expect(validateAccountTransfer({ ...input, toAccountId: 'a1' })).toContain('sameAccount')
    expect(validateAccountTransfer({ ...input, amount: 0 })).toContain('amountRequired')
    expect(validateAccountTransfer(input)).toEqual([])
  })
  it('category transfers have no account and name the other category', () => {
    const [f, t] = buildCategoryTransfer({ fromCategoryId: 'vm', toCategoryId: 'food', fromName: 'VM', toName: 'Food', amount: 80, date: '2026-11-30' }, ['p', 'q'])
    expect(f).toMatchObject({ accountId: '', categoryId: 'vm', toCategoryId: 'food', amount: -80, isCategoryTransfer: true, counterTransactionId: 'q' })
    expect(t).toMatchObject({ accountId: '', categoryId: 'food', toCategoryId: 'vm', amount: 80, counterTransactionId: 'p', type: 'CATEGORYTRANSFER' })
  })
})

const plan = (p: Partial<PlanShape> = {}): PlanShape => ({
  isActive: true, startDate: '2026-11-15', endDate: null, recurrencePattern: 'MONTHLY', recurrenceEndType: 'NEVER',
  recurrenceCount: null, executionDay: null, weekendHandling: 'NONE', ...p,
})

describe('planned transactions', () => {
  it('monthly, with count, date end and inactive', () => {
    expect(occurrences(plan(), '2026-11-01', '2027-02-28')).toEqual(['2026-11-15', '2026-12-15', '2027-01-15', '2027-02-15'])
    expect(occurrences(plan({ recurrenceEndType: 'COUNT', recurrenceCount: 2 }), '2026-01-01', '2027-12-31')).toEqual(['2026-11-15', '2026-12-15'])
    // the count runs from startDate even when the window starts later
    expect(occurrences(plan({ recurrenceEndType: 'COUNT', recurrenceCount: 2 }), '2026-12-01', '2027-12-31')).toEqual(['2026-12-15'])
    expect(occurrences(plan({ recurrenceEndType: 'DATE', endDate: '2027-01-20' }), '2026-01-01', '2027-12-31')).toEqual(['2026-11-15', '2026-12-15', '2027-01-15'])
    expect(occurrences(plan({ isActive: false }), '2026-01-01', '2027-12-31')).toEqual([])
  })
  it('steps like dayjs (month-end drift) unless an execution day is set', () => {
    expect(occurrences(plan({ startDate: '2027-01-31' }), '2027-01-01', '2027-04-30')).toEqual(['2027-01-31', '2027-02-28', '2027-03-28', '2027-04-28'])
    expect(occurrences(plan({ startDate: '2027-01-31', executionDay: 31 }), '2027-01-01', '2027-04-30')).toEqual(['2027-01-31', '2027-02-28', '2027-03-31', '2027-04-30'])
  })
  it('other patterns and ONCE', () => {
    expect(occurrences(plan({ recurrencePattern: 'WEEKLY' }), '2026-11-01', '2026-12-01')).toEqual(['2026-11-15', '2026-11-22', '2026-11-29'])
    expect(occurrences(plan({ recurrencePattern: 'BIWEEKLY' }), '2026-11-01', '2026-12-31')).toEqual(['2026-11-15', '2026-11-29', '2026-12-13', '2026-12-27'])
    expect(occurrences(plan({ recurrencePattern: 'QUARTERLY' }), '2026-11-01', '2027-06-01')).toEqual(['2026-11-15', '2027-02-15', '2027-05-15'])
    expect(occurrences(plan({ recurrencePattern: 'YEARLY' }), '2026-11-01', '2028-12-01')).toEqual(['2026-11-15', '2027-11-15', '2028-11-15'])
    expect(occurrences(plan({ recurrencePattern: 'DAILY', recurrenceEndType: 'COUNT', recurrenceCount: 3 }), '2026-01-01', '2027-01-01')).toEqual(['2026-11-15', '2026-11-16', '2026-11-17'])
    expect(occurrences(plan({ recurrencePattern: 'ONCE' }), '2026-11-01', '2027-11-01')).toEqual(['2026-11-15'])
    expect(occurrences(plan({ recurrencePattern: 'ONCE' }), '2026-11-16', '2027-11-01')).toEqual([])
  })
  it('weekend handling moves Saturday/Sunday, stepping continues from the planned day', () => {
    // 2026-11-14 is a Saturday, 2026-11-15 a Sunday
    expect(applyWeekendHandling('2026-11-14', 'BEFORE')).toBe('2026-11-13')
    expect(applyWeekendHandling('2026-11-15', 'BEFORE')).toBe('2026-11-13')
    expect(applyWeekendHandling('2026-11-14', 'AFTER')).toBe('2026-11-16')
    expect(applyWeekendHandling('2026-11-15', 'AFTER')).toBe('2026-11-16')
    expect(applyWeekendHandling('2026-11-15', 'NONE')).toBe('2026-11-15')
    expect(occurrences(plan({ weekendHandling: 'AFTER' }), '2026-11-01', '2027-01-31')).toEqual(['2026-11-16', '2026-12-15', '2027-01-15'])
  })
  it('next due dates from today and the 24-month horizon of NEVER', () => {
    expect(nextDueDates(plan(), '2026-12-02', 2)).toEqual(['2026-12-15', '2027-01-15'])
    expect(occurrences(plan({ recurrencePattern: 'DAILY' }), '2026-11-01', '2030-01-01').length).toBeLessThan(1000)
  })
  it('booking an occurrence moves the plan on or ends it', () => {
    expect(afterBooking(plan(), '2026-11-15')).toEqual({ delete: false, changes: { startDate: '2026-12-15' } })
    expect(afterBooking(plan({ recurrencePattern: 'ONCE' }), '2026-11-15')).toEqual({ delete: true })
    expect(afterBooking(plan({ recurrenceEndType: 'DATE', endDate: '2026-12-15' }), '2026-12-15')).toEqual({ delete: true })
    const counted = plan({ recurrenceEndType: 'COUNT', recurrenceCount: 2 })
    const first = afterBooking(counted, '2026-11-15')
    expect(first).toEqual({ delete: false, changes: { startDate: '2026-12-15', recurrenceCount: 1 } })
    const moved = { ...counted, ...(first as { changes: Partial<PlanShape> }).changes }
    expect(afterBooking(moved, '2026-12-15')).toEqual({ delete: true })
    const p = { id: 'p', name: 'Miete', accountId: 'a1', categoryId: 'rent', amount: -900, tagIds: ['t'], note: null, recipientId: null, valueDate: null } as unknown as PlanningTransaction
    expect(plannedBooking(p, '2026-12-01', 'Vermieter')).toMatchObject({
      type: 'EXPENSE', accountId: 'a1', categoryId: 'rent', amount: -900, date: '2026-12-01', valueDate: '2026-12-01', description: 'Miete',
      planningTransactionId: 'p', payee: 'Vermieter', tagIds: ['t'],
    })
    expect(plannedBooking({ ...p, amount: 5 }, '2026-12-01', null).type).toBe('INCOME')
  })
  it('a transfer plan has a counter plan with the accounts swapped and the amount negated', () => {
    const main = {
      id: 'm', name: 'Sparen', accountId: 'giro', transferToAccountId: 'spar', transactionType: 'ACCOUNTTRANSFER', amount: -100, tagIds: [],
      amountType: 'EXACT', ...plan(),
    } as unknown as PlanningTransaction
    expect(counterPlan(main)).toMatchObject({
      name: 'Sparen (Gegenbuchung)', accountId: 'spar', transferToAccountId: 'giro', amount: 100, counterPlanningTransactionId: 'm',
      recurrencePattern: 'MONTHLY', startDate: '2026-11-15', transactionType: 'ACCOUNTTRANSFER', categoryId: null,
    })
  })
  it('types and validation', () => {
    expect(planTransactionType({ amount: -5 })).toBe('EXPENSE')
    expect(planTransactionType({ amount: 5 })).toBe('INCOME')
    expect(planTransactionType({ amount: 5, transferToAccountId: 'x' })).toBe('ACCOUNTTRANSFER')
    const ok = { name: 'Miete', accountId: 'a', amount: -900, startDate: '2026-12-01', recurrencePattern: 'MONTHLY', recurrenceEndType: 'NEVER' }
    expect(validatePlan(ok)).toEqual([])
    expect(validatePlan({ ...ok, name: ' ', amount: 0 })).toEqual(['nameRequired', 'amountRequired'])
    expect(validatePlan({ ...ok, recurrenceEndType: 'COUNT', recurrenceCount: 0 })).toEqual(['countRequired'])
    expect(validatePlan({ ...ok, recurrenceEndType: 'DATE', endDate: '2026-01-01' })).toEqual(['endBeforeStart'])
  })
})

describe('budget month', () => {
  const txs = [
    // October: 100 budgeted, 30 spent
    tx({ accountId: '', categoryId: 'food', amount: 100, type: 'CATEGORYTRANSFER', date: '2026-10-31' }),
    tx({ accountId: '', categoryId: 'vm', amount: -100, type: 'CATEGORYTRANSFER', date: '2026-10-31' }),
    tx({ categoryId: 'food', amount: -30, date: '2026-10-12' }),
    // November: 50 more, 80 spent (value date decides the month)
    tx({ accountId: '', categoryId: 'food', amount: 50, type: 'CATEGORYTRANSFER', date: '2026-11-30' }),
    tx({ categoryId: 'food', amount: -80, date: '2026-10-30', valueDate: '2026-11-02' }),
    tx({ categoryId: 'food', amount: 5, type: 'INCOME', date: '2026-11-20' }),
    tx({ categoryId: 'food', amount: -1000, date: '2026-12-01' }),
  ]
  const plans = [{ id: 'p', categoryId: 'food', amount: -10, ...plan({ startDate: '2026-11-20', recurrenceEndType: 'COUNT', recurrenceCount: 2 }) }] as unknown as PlanningTransaction[]
  it('budgeted, spent, forecast and available carry over', () => {
    expect(budgetRow('food', txs, [], '2026-10')).toEqual({ categoryId: 'food', budgeted: 100, spent: -30, forecast: 0, available: 70 })
    expect(budgetRow('food', txs, [], '2026-11')).toEqual({ categoryId: 'food', budgeted: 50, spent: -75, forecast: 0, available: 45 })
    expect(budgetRow('food', txs, plans, '2026-11')).toMatchObject({ forecast: -10, available: 35 })
    expect(budgetRow('food', txs, plans, '2026-12')).toMatchObject({ budgeted: 0, spent: -1000, forecast: -10, available: -975 })
  })
  it('lists categories except the available funds, hidden and inactive ones', () => {
    const cats = [cat('food', 'Food'), cat('vm', 'Verfügbare Mittel'), cat('h', 'Hidden', { isHidden: true }), cat('x', 'Off', { isActive: false })]
    expect(budgetMonth(cats, txs, [], '2026-11').map((r) => r.categoryId)).toEqual(['food'])
  })
  it('a new budget is the difference, booked on the last day of the month', () => {
    expect(budgetChange(50, 120, '2026-11')).toEqual({ amount: 70, toCategory: true, date: '2026-11-30' })
    expect(budgetChange(50, 20, '2026-02')).toEqual({ amount: 30, toCategory: false, date: '2026-02-28' })
    expect(budgetChange(50, 50, '2026-11')).toBeNull()
  })
})

describe('automation rules', () => {
  const rule = (p: Partial<AutomationRule>): AutomationRule =>
    ({ id: 'r', name: 'r', stage: 'DEFAULT', priority: 0, isActive: true, conditions: [], actions: [], ...p }) as AutomationRule
  const base = tx({ accountId: 'a1', amount: -42.5, description: 'REWE Markt', note: null, date: '2026-11-10', tagIds: ['t0'] })
  it('conditions', () => {
    expect(conditionHolds({ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'rewe' }, base)).toBe(true)
    expect(conditionHolds({ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'rewe' }, { ...base, description: '', note: 'bei REWE' })).toBe(true)
    expect(conditionHolds({ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'aldi' }, base)).toBe(false)
    expect(conditionHolds({ type: 'ACCOUNT_IS', operator: 'is', value: 'a1' }, base)).toBe(true)
    expect(conditionHolds({ type: 'AMOUNT_LESS', operator: 'less', value: -40 }, base)).toBe(true)
    expect(conditionHolds({ type: 'AMOUNT_GREATER', operator: 'greater', value: '0' }, base)).toBe(false)
    expect(conditionHolds({ type: 'AMOUNT_EQUALS', operator: 'equals', value: '-42.5' }, base)).toBe(true)
    expect(conditionHolds({ type: 'DATE_IS', operator: 'is', value: '2026-11-10' }, base)).toBe(true)
    expect(conditionHolds({ type: 'DATE_APPROX', operator: 'is', value: '2026-11-10' }, base)).toBe(false)
  })
  it('all vs any', () => {
    const conditions = [
      { type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'rewe' },
      { type: 'AMOUNT_GREATER', operator: 'greater', value: 0 },
    ]
    expect(ruleMatches({ conditions }, base)).toBe(false)
    expect(ruleMatches({ conditions, conditionLogic: 'any' }, base)).toBe(true)
    expect(ruleMatches({ conditions: [] }, base)).toBe(true)
  })
  it('applies active DEFAULT rules in priority order, later ones seeing earlier results', () => {
    const rules = [
      rule({ id: '2', priority: 2, conditions: [{ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'rewe' }], actions: [{ type: 'SET_CATEGORY', value: 'late' }] }),
      rule({ id: '1', priority: 1, conditions: [{ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'rewe' }], actions: [{ type: 'SET_CATEGORY', value: 'food' }, { type: 'ADD_TAG', value: ['t1', 't0'] }] }),
      rule({ id: '3', priority: 0, isActive: false, actions: [{ type: 'SET_NOTE', value: 'inactive' }] }),
      rule({ id: '4', priority: 0, stage: 'POST', actions: [{ type: 'SET_NOTE', value: 'post' }] }),
      rule({ id: '5', priority: 3, conditions: [{ type: 'SET_CATEGORY' as never, operator: '', value: '' }], actions: [{ type: 'SET_NOTE', value: 'unknown condition' }] }),
    ]
    const out = applyRules(rules, base)
    expect(out.categoryId).toBe('late')
    expect(out.tagIds).toEqual(['t0', 't1'])
    expect(out.note).toBeNull()
    expect(applyRules(rules, base, 'POST').note).toBe('post')
    expect(applyRules(rules, { ...base, type: 'CATEGORYTRANSFER' })).toEqual({ ...base, type: 'CATEGORYTRANSFER' })
  })
})

describe('chart series', () => {
  const cats = [cat('food', 'Food'), cat('rent', 'Rent')]
  const txs = [
    tx({ categoryId: 'food', amount: -20, date: '2026-11-03' }),
    tx({ categoryId: 'food', amount: -5.5, date: '2026-11-04' }),
    tx({ categoryId: 'rent', amount: -900, date: '2026-11-01' }),
    tx({ categoryId: null, amount: -1, date: '2026-11-01' }),
    tx({ categoryId: 'rent', amount: -900, date: '2026-10-01' }),
    tx({ categoryId: 'food', amount: 3000, type: 'INCOME', date: '2026-11-01' }),
  ]
  it('spending by category for a month', () => {
    expect(spendingByCategory(txs, cats, '2026-11', 'Other')).toEqual({ labels: ['Rent', 'Food', 'Other'], datasets: [{ label: '2026-11', data: [900, 25.5, 1] }] })
    expect(spendingByCategory(txs, cats, '2026-09', 'Other').labels).toEqual([])
  })
  it('budget vs actual', () => {
    const rows = [
      { categoryId: 'food', budgeted: 100, spent: -25.5, forecast: 0, available: 74.5 },
      { categoryId: 'rent', budgeted: 0, spent: 0, forecast: 0, available: 0 },
    ]
    expect(budgetVsActual(rows, cats, { budgeted: 'B', spent: 'S' })).toEqual({ labels: ['Food'], datasets: [{ label: 'B', data: [100] }, { label: 'S', data: [25.5] }] })
  })
  it('balance over time per account', () => {
    const s = balanceOverTime(txs, [acc('a1'), acc('zz', { isOfflineBudget: true })], ['2026-10', '2026-11'])
    expect(s).toEqual({ labels: ['2026-10', '2026-11'], datasets: [{ label: 'A1', data: [-900, 1173.5] }] })
  })
})

describe('income into the budget (0.4 auto transfer)', () => {
  const isIncome = (id: string) => id === 'salary'
  const inc = { type: 'INCOME', amount: 3000, categoryId: 'salary', date: '2026-11-25' }
  it('on add, change and delete', async () => {
    const { incomeTransfers } = await import('../src/finance/income')
    expect(incomeTransfers(null, inc, isIncome)).toMatchObject([{ toFunds: true, categoryId: 'salary', amount: 3000, date: '2026-11-25' }])
    expect(incomeTransfers(null, { ...inc, categoryId: 'food' }, isIncome)).toEqual([])
    expect(incomeTransfers(null, { ...inc, type: 'EXPENSE', amount: -5 }, isIncome)).toEqual([])
    expect(incomeTransfers(inc, null, isIncome)).toMatchObject([{ toFunds: false, amount: 3000, date: '2026-11-25' }])
    expect(incomeTransfers(inc, { ...inc, amount: 3100 }, isIncome)).toMatchObject([{ toFunds: true, amount: 100, date: '2026-11-25' }])
    expect(incomeTransfers(inc, { ...inc, amount: 2900.5 }, isIncome)).toMatchObject([{ toFunds: false, amount: 99.5 }])
    expect(incomeTransfers(inc, { ...inc, date: '2026-12-01' }, isIncome)).toMatchObject([
      { toFunds: false, amount: 3000, date: '2026-11-25' },
      { toFunds: true, amount: 3000, date: '2026-12-01' },
    ])
    expect(incomeTransfers(inc, { ...inc, note: 'x' } as typeof inc, isIncome)).toEqual([])
  })
})

describe('budget lines with child categories (0.4 aggregation)', () => {
  it('a parent adds its active children; children follow their parent', async () => {
    const { budgetLines } = await import('../src/finance/budget')
    const cats = [
      cat('home', 'Wohnen', { sortOrder: 0 }),
      cat('rent', 'Miete', { parentCategoryId: 'home', sortOrder: 1 }),
      cat('power', 'Strom', { parentCategoryId: 'home', sortOrder: 0 }),
      cat('old', 'Alt', { parentCategoryId: 'home', isActive: false }),
      cat('food', 'Essen'),
    ]
    const txs = [
      tx({ accountId: '', categoryId: 'rent', amount: 900, type: 'CATEGORYTRANSFER', date: '2026-11-30' }),
      tx({ categoryId: 'rent', amount: -900, date: '2026-11-01' }),
      tx({ categoryId: 'power', amount: -80, date: '2026-11-03' }),
      tx({ categoryId: 'home', amount: 20, type: 'CATEGORYTRANSFER', date: '2026-11-30' }),
      tx({ categoryId: 'old', amount: -999, date: '2026-11-03' }),
    ]
    const shown = cats.filter((c) => c.isActive)
    const lines = budgetLines(shown, cats, txs, [], '2026-11')
    expect(lines.map((l) => [l.categoryId, l.depth])).toEqual([['home', 0], ['power', 1], ['rent', 1], ['food', 0]])
    expect(lines[0]).toMatchObject({ budgeted: 920, spent: -980, available: -60, own: { budgeted: 20, spent: 0, available: 20 } })
    expect(lines[2]).toMatchObject({ budgeted: 900, spent: -900, available: 0 })
  })
})
