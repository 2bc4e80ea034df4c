import { describe, expect, it } from 'vitest'
import { account, dataUpdate, load, makeEngine } from './helpers'

const T0 = '2026-11-25T10:00:00.000Z'
const TX = {
  id: 'tx1', accountId: 'a1', categoryId: 'food', date: '2026-11-25', valueDate: '2026-11-25', amount: -42.5,
  description: 'Groceries', note: null, tagIds: ['t1'], type: 'EXPENSE', runningBalance: -42.5, createdAt: T0,
}

/** An engine holding the server's version of TX (stamped T0), offline so that nothing is sent yet. */
async function withTransaction() {
  const h = await makeEngine()
  await h.engine.handleMessage(dataUpdate('Transaction', 'create', { ...TX, updated_at: T0, updatedAt: T0 }, 1))
  h.transport.online = false
  return h
}

describe('field-level updates and coalescing', () => {
  it('an update queues only the fields whose value changed; no change queues nothing', async () => {
    const { engine, db, transport } = await withTransaction()
    const same = await engine.update('Transaction', 'tx1', { amount: -42.5, tagIds: ['t1'], note: null })
    expect(same.updated_at).toBe(T0)
    expect(await db.syncQueue.count()).toBe(0)
    const tx = await engine.update('Transaction', 'tx1', { note: 'party', amount: -42.5, tagIds: ['t1'] })
    expect(tx).toMatchObject({ note: 'party', updated_at: '2026-11-25T12:00:00.000Z', updatedAt: '2026-11-25T12:00:00.000Z' })
    const q = await db.syncQueue.toArray()
    expect(q).toHaveLength(1)
    expect(q[0]).toMatchObject({ operationType: 'update', fields: ['note'] })
    expect(q[0].payload).toEqual({ id: 'tx1', updated_at: tx.updated_at, note: 'party' })
    transport.online = true
    await engine.flush()
    const [entry] = transport.batches()[0].entries
    expect(entry).toMatchObject({ operationType: 'update', fields: ['note'], payload: { id: 'tx1', note: 'party' } })
  })

  it('refuses an update of an entity that is not stored', async () => {
    const { engine } = await makeEngine()
    await expect(engine.update('Tag', 'nope', { name: 'x' })).rejects.toThrow(/not stored/)
  })

  it('two field-level updates never sent become one with both fields and the latest stamp', async () => {
    const { engine, db, advance } = await withTransaction()
    await engine.update('Transaction', 'tx1', { note: 'first' })
    advance(10)
    await engine.update('Transaction', 'tx1', { categoryId: 'household', note: 'second' })
    const q = await db.syncQueue.toArray()
    expect(q).toHaveLength(1)
    expect(q[0].fields).toEqual(['note', 'categoryId'])
    expect(q[0].payload).toEqual({ id: 'tx1', updated_at: '2026-11-25T12:00:00.010Z', note: 'second', categoryId: 'household' })
  })

  it('a whole update and a field-level update never sent become one whole update', async () => {
    for (const order of ['whole first', 'fields first']) {
      const { engine, db } = await withTransaction()
      const edit = async (whole: boolean) => {
        const current = (await engine.get('Transaction', 'tx1'))!
        if (whole) await engine.put('Transaction', { ...current, description: 'whole' })
        else await engine.update('Transaction', 'tx1', { note: 'field' })
      }
      await edit(order === 'whole first')
      await edit(order !== 'whole first')
      const q = await db.syncQueue.toArray()
      expect(q, order).toHaveLength(1)
      expect(q[0].fields, order).toBeUndefined()
      expect(q[0].payload, order).toMatchObject({ ...TX, description: 'whole', note: 'field', updated_at: '2026-11-25T12:00:00.001Z' })
    }
  })

  it('a create and an update never sent become one create of the whole entity', async () => {
    const { engine, db, transport } = await makeEngine()
    transport.online = false
    await engine.put('Account', account('a1', 'Giro'))
    await engine.update('Account', 'a1', { note: 'joint' })
    const q = await db.syncQueue.toArray()
    expect(q).toHaveLength(1)
    expect(q[0]).toMatchObject({ operationType: 'create', payload: { ...account('a1', 'Giro'), note: 'joint' } })
    expect(q[0].fields).toBeUndefined()
  })

  it('nothing is merged into a change that was sent, failed or is a delete', async () => {
    const { engine, db, transport } = await withTransaction()
    transport.online = true
    await engine.update('Transaction', 'tx1', { note: 'sent' }) // in flight now
    await engine.update('Transaction', 'tx1', { categoryId: 'household' })
    // the connection dies: the entry that was in flight may have been applied, so it stays as it
    // was; the one never sent still takes later edits
    transport.online = false
    await engine.onOffline()
    await engine.update('Transaction', 'tx1', { note: 'queued' })
    expect((await db.syncQueue.orderBy('order').toArray()).map((e) => [e.status, e.attempts, e.fields, e.payload?.note])).toEqual([
      ['pending', 1, ['note'], 'sent'],
      ['pending', 0, ['categoryId', 'note'], 'queued'],
    ])
    await db.syncQueue.toCollection().modify({ status: 'failed' })
    await engine.update('Transaction', 'tx1', { note: 'after the failure' })
    await engine.remove('Transaction', 'tx1')
    expect((await db.syncQueue.orderBy('order').toArray()).map((e) => e.operationType)).toEqual(['update', 'update', 'update', 'delete'])
  })
})

describe('incoming versions of an entity with a queued field-level edit', () => {
  const T1 = '2026-11-25T12:00:05.000Z'

  it("shows the server's version with the queued fields laid over it, then adopts the merge echoed after the ack", async () => {
    const { engine, db, transport } = await withTransaction()
    const mine = await engine.update('Transaction', 'tx1', { note: 'party' })
    // another device changed the category
    await engine.handleMessage(dataUpdate('Transaction', 'update', { ...TX, categoryId: 'household', updated_at: T1, updatedAt: T1 }, 2))
    const shown = await db.entities('Transaction').get('tx1')
    expect(shown).toMatchObject({ categoryId: 'household', note: 'party', updated_at: T1, updatedAt: T1 })
    expect(await db.syncQueue.count()).toBe(1)
    transport.online = true
    await engine.flush()
    const [entry] = transport.batches()[0].entries
    expect(entry.payload).toEqual({ id: 'tx1', updated_at: mine.updated_at, note: 'party' })
    // the server merged (V = T1 + 1 ms): the ack alone does not restamp the local version ...
    const merged = '2026-11-25T12:00:05.001Z'
    await engine.handleMessage({ type: 'sync_ack', id: entry.id, status: 'processed', seq: 3, applied: true, updated_at: merged, entityId: 'tx1', entityType: 'Transaction', operationType: 'update' })
    expect((await db.entities('Transaction').get('tx1'))?.updated_at).toBe(T1)
    expect(transport.last('request_initial_data')).toBeUndefined()
    // ... the merged version that follows it is adopted
    await engine.handleMessage(dataUpdate('Transaction', 'update', { ...TX, categoryId: 'household', note: 'party', updated_at: merged, updatedAt: merged }, 3))
    expect(await db.entities('Transaction').get('tx1')).toMatchObject({ categoryId: 'household', note: 'party', updated_at: merged, updatedAt: merged })
  })

  it('applies a merge that arrived before the ack, and asks for it when a re-sent entry is only acknowledged again', async () => {
    for (const echoFirst of [true, false]) {
      const { engine, db, transport } = await withTransaction()
      await engine.update('Transaction', 'tx1', { note: 'party' })
      transport.online = true
      await engine.flush()
      const [entry] = transport.batches()[0].entries
      const merged = { ...TX, note: 'party', categoryId: 'household', updated_at: T1, updatedAt: T1 }
      if (echoFirst) await engine.handleMessage(dataUpdate('Transaction', 'update', merged, 4))
      await engine.handleMessage({ type: 'sync_batch_result', results: [{ id: entry.id, status: 'processed', seq: 4, applied: true, duplicate: !echoFirst, updated_at: T1 }] })
      if (echoFirst) {
        expect(await db.entities('Transaction').get('tx1')).toMatchObject(merged)
      } else {
        expect(transport.last('request_initial_data')).toEqual({ type: 'request_initial_data', tenant_id: engine.tenantId, since: 1 })
      }
    }
  })

  it('a delta load is laid under the queued fields the same way', async () => {
    const { engine, db } = await withTransaction()
    await engine.update('Transaction', 'tx1', { note: 'party', amount: -40 })
    await engine.applyLoad(load({ transactions: [{ ...TX, categoryId: 'household', note: 'theirs', updated_at: T1, updatedAt: T1 }] }, 5, { delta: true }) as never)
    expect(await db.entities('Transaction').get('tx1')).toMatchObject({ categoryId: 'household', note: 'party', amount: -40 })
  })

  it('a queued create, whole update or delete keeps the local version as before', async () => {
    const { engine, db } = await withTransaction()
    await engine.update('Transaction', 'tx1', { note: 'party' })
    await engine.put('Transaction', { ...(await engine.get('Transaction', 'tx1'))!, description: 'whole' }) // merged: whole
    await engine.handleMessage(dataUpdate('Transaction', 'update', { ...TX, categoryId: 'household', updated_at: T1, updatedAt: T1 }, 2))
    expect(await db.entities('Transaction').get('tx1')).toMatchObject({ categoryId: 'food', note: 'party', description: 'whole' })
    await engine.remove('Transaction', 'tx1')
    await engine.handleMessage(dataUpdate('Transaction', 'update', { ...TX, note: 'x', updated_at: '2026-11-25T12:00:06.000Z' }, 3))
    expect(await db.entities('Transaction').get('tx1')).toBeUndefined()
  })

  it('a field edit of an entity deleted meanwhile loses, and the entity goes', async () => {
    const { engine, db, transport } = await withTransaction()
    await engine.update('Transaction', 'tx1', { note: 'party' })
    await engine.handleMessage(dataUpdate('Transaction', 'delete', { id: 'tx1', updated_at: T1 }, 2))
    expect(await db.entities('Transaction').get('tx1')).toMatchObject({ note: 'party' })
    transport.online = true
    await engine.flush()
    const [entry] = transport.batches()[0].entries
    await engine.handleMessage({ type: 'sync_batch_result', results: [{ id: entry.id, status: 'processed', seq: 2, applied: false, duplicate: false, updated_at: T1 }] })
    expect(await db.entities('Transaction').get('tx1')).toBeUndefined()
  })
})
