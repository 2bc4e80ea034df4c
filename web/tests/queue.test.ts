import { describe, expect, it } from 'vitest'
import { backoffDelay } from '../src/sync/engine'
import { nextStamp } from '../src/sync/time'
import { account, makeEngine } from './helpers'

describe('local changes and the queue', () => {
  it('writes the entity and its queue entry together, with a fresh updated_at', async () => {
    const { engine, db, transport } = await makeEngine()
    transport.online = false
    const a = await engine.put('Account', account('a1', 'Giro'))
    expect(a.updated_at).toBe('2026-11-25T12:00:00.000Z')
    const q = await db.syncQueue.toArray()
    expect(q).toHaveLength(1)
    expect(q[0]).toMatchObject({ entityType: 'Account', entityId: 'a1', operationType: 'create', status: 'pending', attempts: 0 })
    expect(q[0].payload).toMatchObject({ id: 'a1', name: 'Giro', updated_at: a.updated_at })
    // a second edit in the same millisecond is still strictly newer (and, never sent, it is
    // merged into the queued create)
    const b = await engine.put('Account', { ...a, name: 'Giro 2' })
    expect(b.updated_at).toBe('2026-11-25T12:00:00.001Z')
    expect(await db.syncQueue.toArray()).toMatchObject([{ operationType: 'create', payload: { name: 'Giro 2', updated_at: b.updated_at } }])
    await engine.remove('Account', 'a1')
    const del = (await db.syncQueue.toArray())[1]
    expect(del).toMatchObject({ operationType: 'delete', payload: { id: 'a1', updated_at: '2026-11-25T12:00:00.002Z' } })
    expect(await db.entities('Account').get('a1')).toBeUndefined()
  })

  it('nextStamp is max(now, previous + 1 ms) in the wire form', () => {
    const now = Date.parse('2026-11-25T12:00:00.000Z')
    expect(nextStamp(undefined, now)).toBe('2026-11-25T12:00:00.000Z')
    expect(nextStamp('2026-11-25T11:00:00.000Z', now)).toBe('2026-11-25T12:00:00.000Z')
    expect(nextStamp('2026-11-25T12:00:05.000Z', now)).toBe('2026-11-25T12:00:05.001Z')
  })

  it('sends pending entries as one ordered batch and removes them on ack', async () => {
    const { engine, db, transport } = await makeEngine()
    transport.online = false
    await engine.put('AccountGroup', { id: 'g1', name: 'G', sortOrder: 0 })
    await engine.put('Account', account('a1', 'A'))
    await engine.put('Account', { ...(await engine.get('Account', 'a1'))!, name: 'B' })
    transport.online = true
    await engine.flush()
    const [batch] = transport.batches()
    expect(batch.entries.map((e) => `${e.entityType}:${e.operationType}`)).toEqual(['AccountGroup:create', 'Account:create'])
    expect(batch.entries[1].payload).toMatchObject({ name: 'B' })
    expect(Object.keys(batch.entries[0]).sort()).toEqual(
      ['entityId', 'entityType', 'id', 'operationType', 'payload', 'tenantId', 'timestamp'].sort(),
    )
    expect((await db.syncQueue.toArray()).every((e) => e.status === 'processing' && e.attempts === 1)).toBe(true)
    // nothing else is sent while the batch is in flight
    await engine.flush()
    expect(transport.batches()).toHaveLength(1)
    await engine.handleMessage({
      type: 'sync_batch_result',
      results: batch.entries.map((e, i) => ({ id: e.id, status: 'processed', seq: i + 1, applied: true, updated_at: (e.payload as { updated_at: string }).updated_at })),
    })
    expect(await db.syncQueue.count()).toBe(0)
  })

  it('splits into batches of at most batchSize', async () => {
    const { engine, transport } = await makeEngine({ batchSize: 2 })
    transport.online = false
    for (let i = 0; i < 5; i++) await engine.put('Tag', { id: `t${i}`, name: `T${i}` })
    transport.online = true
    await engine.flush()
    expect(transport.batches()[0].entries).toHaveLength(2)
  })

  it('caps a batch by size and halves it after a connection died with a batch in flight', async () => {
    const { engine, transport } = await makeEngine({ batchMaxBytes: 2000 })
    transport.online = false
    for (let i = 0; i < 6; i++) await engine.put('Tag', { id: `t${i}`, name: 'x'.repeat(500) })
    transport.online = true
    await engine.flush()
    expect(transport.batches()[0].entries).toHaveLength(2)
    // the connection dies with the batch in flight: next batches are smaller
    await engine.onOffline()
    transport.sent.length = 0
    await engine.onOnline()
    expect(transport.batches()[0].entries).toHaveLength(1)
  })

  it('retryable failures go back to pending with backoff; others become failed and stay', async () => {
    const { engine, db, transport, advance } = await makeEngine()
    transport.online = false
    await engine.put('Tag', { id: 't1', name: 'one' })
    await engine.put('Tag', { id: 't2', name: 'two' })
    await engine.put('Tag', { id: 't3', name: 'three' })
    transport.online = true
    await engine.flush()
    const [b] = transport.batches()
    await engine.handleMessage({
      type: 'sync_batch_result',
      results: [
        { id: b.entries[0].id, status: 'failed', reason: 'storage_error', detail: 'disk full' },
        { id: b.entries[1].id, status: 'failed', reason: 'validation_error', detail: 'name: field required' },
        { id: b.entries[2].id, status: 'failed', reason: 'something_new', detail: 'x', retryable: true },
      ],
    })
    const q = await db.syncQueue.orderBy('order').toArray()
    expect(q.map((e) => e.status)).toEqual(['pending', 'failed', 'pending'])
    expect(q[0].nextAttemptAt).toBeGreaterThan(Date.parse('2026-11-25T12:00:00.000Z'))
    expect(q[0].lastError).toBe('storage_error: disk full')
    expect(q[1]).toMatchObject({ reason: 'validation_error', lastError: 'validation_error: name: field required' })
    const st = await engine.state()
    expect(st.failed).toHaveLength(1)
    expect(st.pending).toBe(2)
    // not before the backoff
    await engine.flush()
    expect(transport.batches()).toHaveLength(1)
    advance(2000)
    await engine.flush()
    expect(transport.batches()).toHaveLength(2)
    expect(transport.batches()[1].entries.map((e) => e.entityId)).toEqual(['t1', 't3'])
  })

  it('backoff grows exponentially with jitter and is capped', () => {
    expect(backoffDelay(1, 1000, 60000, () => 1)).toBe(1000)
    expect(backoffDelay(3, 1000, 60000, () => 1)).toBe(4000)
    expect(backoffDelay(3, 1000, 60000, () => 0)).toBe(2000)
    expect(backoffDelay(20, 1000, 60000, () => 1)).toBe(60000)
  })

  it('a failed entry blocks later changes of the same entity only; retry and discard', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.put('Tag', { id: 't1', name: 'bad' })
    await engine.flush()
    const first = transport.batches()[0]
    await engine.handleMessage({ type: 'sync_nack', id: first.entries[0].id, status: 'failed', reason: 'validation_error', detail: 'nope', retryable: false })
    transport.sent.length = 0
    await engine.put('Tag', { id: 't1', name: 'bad again' })
    await engine.put('Tag', { id: 't2', name: 'other' })
    await engine.flush()
    const sent = transport.batches().flatMap((b) => b.entries.map((e) => e.entityId))
    expect(sent).toEqual(['t2'])
    // retry: back to pending, then both changes of t1 go in order
    const t2Entry = transport.batches()[0].entries[0]
    await engine.handleMessage({ type: 'sync_ack', id: t2Entry.id, status: 'processed', seq: 1, applied: true, entityId: 't2', entityType: 'Tag', operationType: 'create' })
    const failed = (await engine.state()).failed[0]
    transport.sent.length = 0
    await engine.retryFailed(failed.id)
    const retried = transport.batches()[0].entries
    expect(retried.map((e) => `${e.entityId}:${(e.payload as { name: string }).name}`)).toEqual(['t1:bad', 't1:bad again'])
    expect((await db.syncQueue.toArray()).every((e) => e.status === 'processing')).toBe(true)
  })

  it('discarding a failed change drops the local version and requests a full load', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.put('Tag', { id: 't1', name: 'x'.repeat(10) })
    await engine.flush()
    const [b] = transport.batches()
    await engine.handleMessage({ type: 'sync_nack', id: b.entries[0].id, status: 'failed', reason: 'validation_error', detail: 'too long', retryable: false })
    const [f] = (await engine.state()).failed
    transport.sent.length = 0
    await engine.discardFailed(f.id)
    expect(await db.syncQueue.count()).toBe(0)
    expect(await db.entities('Tag').get('t1')).toBeUndefined()
    expect(transport.sent).toEqual([{ type: 'request_initial_data', tenant_id: engine.tenantId }])
  })

  it('entries stuck in processing go back to pending after a reconnect', async () => {
    const { engine, db, transport } = await makeEngine()
    await engine.put('Tag', { id: 't1', name: 'x' })
    expect((await db.syncQueue.toArray())[0].status).toBe('processing')
    transport.online = false
    await engine.onOffline()
    expect((await db.syncQueue.toArray())[0].status).toBe('pending')
    await engine.put('Tag', { id: 't2', name: 'y' })
    transport.online = true
    transport.sent.length = 0
    await engine.onOnline()
    expect(transport.sent[0]).toEqual({ type: 'request_initial_data', tenant_id: engine.tenantId })
    // the same entry id is re-sent (the server de-duplicates it); after a connection died with a
    // batch in flight the next batch is smaller, and back to full size after a success
    const ids = (await db.syncQueue.orderBy('order').toArray()).map((e) => e.id)
    expect(transport.batches()[0].entries.map((e) => e.id)).toEqual([ids[0]])
    await engine.handleMessage({ type: 'sync_batch_result', results: [{ id: ids[0], status: 'processed', seq: 1, applied: true }] })
    expect(transport.batches()[1].entries.map((e) => e.entityId)).toEqual(['t2'])
  })

  it('processing entries left by a crash are pending again after init', async () => {
    const first = await makeEngine()
    await first.engine.put('Tag', { id: 't1', name: 'x' })
    expect((await first.db.syncQueue.toArray())[0].status).toBe('processing')
    const { SyncEngine } = await import('../src/sync/engine')
    const again = new SyncEngine({ db: first.db, tenantId: first.engine.tenantId })
    await again.init()
    expect((await first.db.syncQueue.toArray())[0].status).toBe('pending')
  })
})
