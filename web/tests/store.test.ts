import { beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { defineEntityStore } from '../src/sync/store'
import { dataUpdate, makeEngine } from './helpers'

const useTags = defineEntityStore<{ id: string; name: string }>('Tag')
const useRecipients = defineEntityStore<{ id: string; name: string }>('Recipient')

beforeEach(() => setActivePinia(createPinia()))

describe('generic entity store factory', () => {
  it('mirrors the table, writes through the engine and follows remote changes', async () => {
    const { engine, db, transport } = await makeEngine()
    transport.online = false
    await engine.put('Tag', { id: 'old', name: 'Old' })
    const tags = useTags()
    const recipients = useRecipients()
    await tags.bind(engine)
    await recipients.bind(engine)
    expect(tags.list.map((t) => t.name)).toEqual(['Old'])
    const t = await tags.save({ name: 'New' })
    expect(tags.get(t.id)?.name).toBe('New')
    expect(await db.syncQueue.count()).toBe(2)
    await tags.update(t.id, { name: 'Renamed' })
    expect(tags.get(t.id)?.name).toBe('Renamed')
    await tags.remove('old')
    expect(tags.get('old')).toBeUndefined()
    await engine.handleMessage(dataUpdate('Recipient', 'create', { id: 'r1', name: 'Shop', updated_at: '2026-01-01T00:00:00.000Z' }, 1))
    expect(recipients.list.map((r) => r.name)).toEqual(['Shop'])
    expect(tags.list.map((x) => x.name)).toEqual(['Renamed'])
    tags.unbind()
    expect(tags.list).toEqual([])
  })
})

describe('several tabs on one database', () => {
  it('a change in one tab reaches the stores of the other', async () => {
    const { SyncEngine } = await import('../src/sync/engine')
    const first = await makeEngine()
    first.transport.online = false
    const second = new SyncEngine({ db: first.db, tenantId: first.engine.tenantId })
    await second.init()
    const seen: string[] = []
    second.onEntities((c) => seen.push(...c.put.map((e) => `${c.type}:${e.name}`), ...c.deleted.map((id) => `-${id}`)))
    await first.engine.put('Tag', { id: 't1', name: 'from tab 1' })
    await first.engine.remove('Tag', 't1')
    await new Promise((r) => setTimeout(r, 50))
    expect(seen).toEqual(expect.arrayContaining(['-t1']))
    expect(seen.length).toBeGreaterThanOrEqual(2)
    first.engine.close()
    second.close()
  })
})

describe('store hooks (the transaction store of the app)', () => {
  it('applies active rules to a new transaction only, and removes a transfer counter leg with its leg', async () => {
    const { useAutomationRules, useTransactions } = await import('../src/stores/entities')
    const { engine, transport } = await makeEngine()
    transport.online = false
    const rules = useAutomationRules()
    const txs = useTransactions()
    await rules.bind(engine)
    await txs.bind(engine)
    await rules.save({
      name: 'REWE', stage: 'DEFAULT', priority: 0, isActive: true, conditionLogic: 'all',
      conditions: [{ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'rewe' }],
      actions: [{ type: 'SET_CATEGORY', value: 'food' }],
    })
    const base = { accountId: 'a', date: '2026-11-10', valueDate: '2026-11-10', amount: -5, tagIds: [], type: 'EXPENSE', runningBalance: 0 }
    const t = await txs.save({ ...base, description: 'REWE Markt', categoryId: null })
    expect(t.categoryId).toBe('food')
    // an edit is not re-ruled (0.4 applies rules on add only)
    await txs.update(t.id, { categoryId: 'other' })
    expect(txs.get(t.id)?.categoryId).toBe('other')
    await txs.save({ ...txs.get(t.id)!, description: 'REWE again' })
    expect(txs.get(t.id)?.categoryId).toBe('other')

    await txs.save({ ...base, id: 'x', type: 'ACCOUNTTRANSFER', counterTransactionId: 'y', description: '' })
    await txs.save({ ...base, id: 'y', type: 'ACCOUNTTRANSFER', amount: 5, counterTransactionId: 'x', description: '' })
    await txs.save({ ...base, id: 'z', type: 'ACCOUNTTRANSFER', counterTransactionId: 'x', description: '' })
    await txs.remove('y')
    expect([txs.get('x'), txs.get('y')]).toEqual([undefined, undefined])
    // a link that is not mutual is left alone
    expect(txs.get('z')).toBeDefined()
  })
})

describe('income hook of the transaction store', () => {
  it('moves income to Verfügbare Mittel and back as a linked category transfer', async () => {
    const { useCategories, useTransactions } = await import('../src/stores/entities')
    const { budgetRow } = await import('../src/finance/budget')
    const { engine, transport } = await makeEngine()
    transport.online = false
    const cats = useCategories()
    const txs = useTransactions()
    await cats.bind(engine)
    await txs.bind(engine)
    const base = { budgeted: 0, activity: 0, available: 0, isHidden: false, isActive: true, sortOrder: 0 }
    const salary = await cats.save({ ...base, name: 'Gehalt', isIncomeCategory: true })
    const t = await txs.save({
      accountId: 'a', categoryId: salary.id, date: '2026-11-25', valueDate: '2026-11-25', amount: 3000, tagIds: [], type: 'INCOME', runningBalance: 0, description: '',
    })
    const funds = cats.list.find((c) => c.name === 'Verfügbare Mittel')!
    expect(funds).toBeDefined()
    const row = () => budgetRow(funds.id, txs.list, [], '2026-11')
    expect(row().available).toBe(3000)
    const legs = txs.list.filter((x) => x.type === 'CATEGORYTRANSFER')
    expect(legs.map((x) => x.amount).sort()).toEqual([-3000, 3000])
    expect(legs[0].counterTransactionId).toBe(legs[1].id)
    await txs.update(t.id, { amount: 3200 })
    expect(row().available).toBe(3200)
    await txs.remove(t.id)
    expect(row().available).toBe(0)
    expect(cats.list.filter((c) => c.name === 'Verfügbare Mittel')).toHaveLength(1)
  })
})
