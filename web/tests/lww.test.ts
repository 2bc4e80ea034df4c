import { describe, expect, it } from 'vitest'
import { clientAccepts } from '../src/sync/lww'
import { account, dataUpdate, load, makeEngine } from './helpers'

const T0 = '2026-11-25T10:00:00.000Z'
const T1 = '2026-11-25T10:00:00.001Z'
const T2 = '2026-11-25T10:00:01.000Z'

describe('tie-break rule (client side)', () => {
  it('accepts a server version that is not older; never replaces a pending change', () => {
    expect(clientAccepts(T0, true, false, T1)).toBe(true)
    expect(clientAccepts(T0, true, false, T0)).toBe(true) // tie: the server already decided
    expect(clientAccepts(T1, true, false, T0)).toBe(false)
    expect(clientAccepts(undefined, false, false, T0)).toBe(true)
    expect(clientAccepts(T0, true, true, T2)).toBe(false)
  })
})

describe('applying data_update', () => {
  it('newer and equal versions replace, older ones do not', async () => {
    const { engine, db } = await makeEngine()
    await engine.handleMessage(dataUpdate('Account', 'create', account('a1', 'v1', { updated_at: T1 }), 1))
    expect((await db.entities('Account').get('a1'))?.name).toBe('v1')
    await engine.handleMessage(dataUpdate('Account', 'update', account('a1', 'older', { updated_at: T0 }), 2))
    expect((await db.entities('Account').get('a1'))?.name).toBe('v1')
    await engine.handleMessage(dataUpdate('Account', 'update', account('a1', 'tie', { updated_at: T1 }), 3))
    expect((await db.entities('Account').get('a1'))?.name).toBe('tie')
    await engine.handleMessage(dataUpdate('Account', 'update', account('a1', 'newer', { updated_at: T2 }), 4))
    expect((await db.entities('Account').get('a1'))?.name).toBe('newer')
    await engine.handleMessage(dataUpdate('Account', 'delete', { id: 'a1', updated_at: '2026-11-25T10:00:02.000Z' }, 5))
    expect(await db.entities('Account').get('a1')).toBeUndefined()
    expect(engine.getCursor()).toBe(5)
  })

  it('ignores another tenant and an unknown entity type', async () => {
    const { engine, db } = await makeEngine()
    await engine.handleMessage({ ...dataUpdate('Account', 'create', account('a1', 'x', { updated_at: T1 }), 1), tenant_id: 'other' })
    await engine.handleMessage(dataUpdate('Budget', 'create', { id: 'b', updated_at: T1 }, 2))
    expect(await db.entities('Account').count()).toBe(0)
  })

  it('pending-update protection: a queued local edit is not overwritten; the server winner applies after the ack', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.handleMessage(dataUpdate('Account', 'create', account('a1', 'server', { updated_at: T0 }), 1))
    transport.online = false
    const mine = await engine.put('Account', { ...(await engine.get('Account', 'a1'))!, name: 'mine' })
    // another device's newer edit arrives while mine is queued
    await engine.handleMessage(dataUpdate('Account', 'update', account('a1', 'theirs', { updated_at: '2026-11-25T13:00:00.000Z' }), 2))
    expect((await db.entities('Account').get('a1'))?.name).toBe('mine')
    transport.online = true
    await engine.flush()
    const [b] = transport.batches()
    // the server kept theirs (newer): applied=false, and the winner (already received) now applies
    await engine.handleMessage({ type: 'sync_batch_result', results: [{ id: b.entries[0].id, status: 'processed', seq: 3, applied: false, updated_at: '2026-11-25T13:00:00.000Z' }] })
    expect((await db.entities('Account').get('a1'))?.name).toBe('theirs')
    expect(mine.updated_at).toBe('2026-11-25T12:00:00.000Z')
  })

  it('adopts the server stamp of a restamped tie', async () => {
    const { engine, db, transport } = await makeEngine()
    const a = await engine.put('Account', account('a1', 'x'))
    await engine.flush()
    const [b] = transport.batches()
    await engine.handleMessage({ type: 'sync_ack', id: b.entries[0].id, status: 'processed', seq: 7, applied: true, updated_at: '2026-11-25T12:00:00.001Z', entityId: 'a1', entityType: 'Account', operationType: 'create' })
    expect(a.updated_at).toBe('2026-11-25T12:00:00.000Z')
    expect((await db.entities('Account').get('a1'))?.updated_at).toBe('2026-11-25T12:00:00.001Z')
  })

  it('pending-delete protection: a locally deleted entity is not resurrected by incoming data', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.handleMessage(dataUpdate('Tag', 'create', { id: 't1', name: 'x', updated_at: T0 }, 1))
    transport.online = false
    await engine.remove('Tag', 't1')
    await engine.handleMessage(dataUpdate('Tag', 'update', { id: 't1', name: 'y', updated_at: T1 }, 2))
    expect(await db.entities('Tag').get('t1')).toBeUndefined()
    await engine.applyLoad(load({ tags: [{ id: 't1', name: 'y', updated_at: T1 }] }, 2) as never)
    expect(await db.entities('Tag').get('t1')).toBeUndefined()
    await engine.applyLoad(load({ tags: [{ id: 't1', name: 'z', updated_at: T2 }] }, 3, { delta: true }) as never)
    expect(await db.entities('Tag').get('t1')).toBeUndefined()
    // the server accepts the delete: the deferred old versions do not come back
    transport.online = true
    await engine.flush()
    const [b] = transport.batches()
    await engine.handleMessage({ type: 'sync_batch_result', results: [{ id: b.entries[0].id, status: 'processed', seq: 4, applied: true }] })
    expect(await db.entities('Tag').get('t1')).toBeUndefined()
  })

  it('a version older than one learnt from an ack is not applied (the winner of a superseded change)', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.handleMessage(dataUpdate('Tag', 'create', { id: 't1', name: 'x', updated_at: T0 }, 1))
    transport.online = false
    await engine.update('Tag', 't1', { name: 'mine' })
    await engine.remove('Tag', 't1')
    transport.online = true
    await engine.flush()
    const [b] = transport.batches()
    expect(b.entries.map((e) => e.operationType)).toEqual(['update', 'delete'])
    // the rename lost against a version stored at seq 5, the delete then won at seq 6; the server
    // sends the rename's winner after the batch result
    await engine.handleMessage({
      type: 'sync_batch_result',
      results: [
        { id: b.entries[0].id, status: 'processed', seq: 5, applied: false, duplicate: false, updated_at: T2 },
        { id: b.entries[1].id, status: 'processed', seq: 6, applied: true, duplicate: false, updated_at: '2026-11-25T12:00:00.001Z' },
      ],
    })
    await engine.handleMessage(dataUpdate('Tag', 'update', { id: 't1', name: 'theirs', updated_at: T2 }, 5))
    expect(await db.entities('Tag').get('t1')).toBeUndefined()
  })

  it('a pending create is not deleted by a delta tombstone or a full load that lacks it', async () => {
    const { engine, db, transport } = await makeEngine()
    transport.online = false
    await engine.put('Tag', { id: 'local', name: 'l' })
    await engine.applyLoad(load({}, 5, { delta: true, deleted: { Tag: ['local'] } }) as never)
    await engine.applyLoad(load({}, 5) as never)
    expect(await db.entities('Tag').get('local')).toBeDefined()
  })
})

describe('initial_data_load', () => {
  it('full load: applies by LWW, removes what the server lacks, sets the cursor', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.handleMessage(dataUpdate('Tag', 'create', { id: 'gone', name: 'g', updated_at: T0 }, 1))
    await engine.handleMessage(dataUpdate('Tag', 'create', { id: 'keep', name: 'newer local', updated_at: T2 }, 2))
    await engine.applyLoad(
      load({ tags: [{ id: 'keep', name: 'old', updated_at: T1 }, { id: 'new', name: 'n', updated_at: T1 }] }, 9) as never,
    )
    expect((await db.entities('Tag').toArray()).map((t) => `${t.id}:${t.name}`).sort()).toEqual(['keep:newer local', 'new:n'])
    expect(engine.getCursor()).toBe(9)
    transport.sent.length = 0
    await engine.onOnline()
    expect(transport.sent[0]).toEqual({ type: 'request_initial_data', tenant_id: engine.tenantId, since: 9 })
  })

  it('delta: applies changes and deletions after the cursor', async () => {
    const { engine, db } = await makeEngine()
    await engine.applyLoad(load({ tags: [{ id: 'a', name: 'a', updated_at: T0 }, { id: 'b', name: 'b', updated_at: T0 }] }, 3) as never)
    await engine.applyLoad(load({ tags: [{ id: 'c', name: 'c', updated_at: T1 }] }, 6, { delta: true, deleted: { Tag: ['a'] } }) as never)
    expect((await db.entities('Tag').toArray()).map((t) => t.id).sort()).toEqual(['b', 'c'])
    expect(engine.getCursor()).toBe(6)
  })

  it('reset: replaces the store but keeps pending queue entries and their entities', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.applyLoad(load({ tags: [{ id: 'a', name: 'a', updated_at: T2 }] }, 3) as never)
    transport.online = false
    await engine.put('Tag', { id: 'mine', name: 'm' })
    await engine.applyLoad(load({ tags: [{ id: 'a', name: 'server', updated_at: T0 }] }, 100, { reset: true }) as never)
    expect((await db.entities('Tag').toArray()).map((t) => `${t.id}:${t.name}`).sort()).toEqual(['a:server', 'mine:m'])
    expect(await db.syncQueue.count()).toBe(1)
    expect(engine.getCursor()).toBe(100)
  })

  it('does not advance the cursor from data_update while a load is outstanding', async () => {
    const { engine } = await makeEngine()
    await engine.applyLoad(load({}, 3) as never)
    await engine.onOnline() // sends request_initial_data since 3
    await engine.handleMessage(dataUpdate('Tag', 'create', { id: 'x', name: 'x', updated_at: T0 }, 8))
    expect(engine.getCursor()).toBe(3)
    await engine.applyLoad(load({}, 7, { delta: true }) as never)
    expect(engine.getCursor()).toBe(7)
    await engine.handleMessage(dataUpdate('Tag', 'create', { id: 'y', name: 'y', updated_at: T0 }, 9))
    expect(engine.getCursor()).toBe(9)
  })
})
