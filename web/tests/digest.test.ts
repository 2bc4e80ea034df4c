import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { EMPTY_DIGEST, tenantDigest } from '../src/sync/digest'
import { makeEngine, account } from './helpers'

describe('tenant digest', () => {
  it('is SHA-256 of nothing for zero entities (known vector)', async () => {
    expect(EMPTY_DIGEST).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    expect(await tenantDigest([])).toBe(EMPTY_DIGEST)
  })

  it('hashes the sorted lines type\\tid\\tupdated_at\\n with the canonical timestamp form', async () => {
    const rows = [
      ['Tag', 'b', '2026-01-02T03:04:05.678Z'],
      ['Account', 'z', '2026-01-02T03:04:05.000Z'],
      ['Account', 'a', '2026-01-02T03:04:06.001Z'],
    ] as const
    const expected = createHash('sha256')
      .update(rows.map(([t, i, u]) => `${t}\t${i}\t${u}\n`).sort().join(''))
      .digest('hex')
    expect(await tenantDigest(rows)).toBe(expected)
    // order of input and timestamp spelling do not matter
    expect(
      await tenantDigest([
        ['Account', 'a', '2026-01-02T03:04:06.001+00:00'],
        ['Account', 'z', '2026-01-02T03:04:05Z'],
        ['Tag', 'b', '2026-01-02T03:04:05.678000'],
      ]),
    ).toBe(expected)
  })

  it('a fixed vector: one account group', async () => {
    const line = 'AccountGroup\t5aea3e0b-2565-449a-946e-29e3860f72db\t2026-01-02T03:04:05.678Z\n'
    const expected = createHash('sha256').update(line).digest('hex')
    expect(await tenantDigest([['AccountGroup', '5aea3e0b-2565-449a-946e-29e3860f72db', '2026-01-02T03:04:05.678Z']])).toBe(
      expected,
    )
  })

  it('the engine digests its local store and asks for a full load on mismatch', async () => {
    const { engine, transport, db } = await makeEngine({ recheckDelayMs: 1 })
    expect(await engine.localDigest()).toBe(EMPTY_DIGEST)
    await engine.applyLoad(
      (await import('./helpers')).load({ accounts: [account('a1', 'A', { updated_at: '2026-11-25T10:00:00.000Z' })] }, 3) as never,
    )
    const local = await engine.localDigest()
    expect(local).toBe(await tenantDigest([['Account', 'a1', '2026-11-25T10:00:00.000Z']]))
    transport.sent.length = 0
    await engine.handleMessage({ type: 'data_status_response', tenant_id: 'x', tenant_digest: local, seq: 3 })
    // equal: no reload
    await engine.handleMessage({
      type: 'data_status_response', tenant_id: (engine as unknown as { tenantId: string }).tenantId, tenant_digest: local, seq: 3,
      entity_checksums: {}, last_sync_time: 0, server_time: 0, entity_count: 1,
    })
    expect(transport.sent).toHaveLength(0)
    expect((await engine.state()).lastDigest?.equal).toBe(true)
    const mismatch = {
      type: 'data_status_response', tenant_id: engine.tenantId, tenant_digest: EMPTY_DIGEST, seq: 4,
      entity_checksums: {}, last_sync_time: 0, server_time: 0, entity_count: 0,
    }
    // the first mismatch only schedules a re-check (a change may be in flight) ...
    await engine.handleMessage(mismatch)
    expect(transport.sent).toEqual([])
    await new Promise((r) => setTimeout(r, 30))
    expect(transport.sent).toEqual([{ type: 'data_status_request', tenant_id: engine.tenantId, entity_types: null }])
    transport.sent.length = 0
    // ... the second one reloads everything
    await engine.handleMessage(mismatch)
    expect(transport.sent).toEqual([{ type: 'request_initial_data', tenant_id: engine.tenantId }])
    expect((await engine.state()).lastDigest?.equal).toBe(false)
    // the full load that follows is authoritative: the local-only account goes
    await engine.applyLoad((await import('./helpers')).load({}, 4) as never)
    expect(await db.entities('Account').count()).toBe(0)
  })

  it('does not compare while changes are queued', async () => {
    const { engine, transport } = await makeEngine()
    transport.online = false
    await engine.put('Tag', { id: 't1', name: 'x' })
    transport.online = true
    await engine.handleMessage({
      type: 'data_status_response', tenant_id: engine.tenantId, tenant_digest: EMPTY_DIGEST, seq: 0,
      entity_checksums: {}, last_sync_time: 0, server_time: 0, entity_count: 0,
    })
    expect(transport.last('request_initial_data')).toBeUndefined()
  })
})
