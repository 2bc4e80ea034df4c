import type { OutgoingClientMessage } from '../src/protocol'
import { FinwiseDB } from '../src/sync/db'
import { SyncEngine, type EngineOptions, type Transport } from '../src/sync/engine'

export const TENANT = '11111111-1111-4111-8111-111111111111'

export class FakeTransport implements Transport {
  online = true
  sent: OutgoingClientMessage[] = []
  send(m: OutgoingClientMessage): boolean {
    if (!this.online) return false
    this.sent.push(m)
    return true
  }
  batches() {
    return this.sent.filter((m) => m.type === 'process_sync_batch') as Extract<
      OutgoingClientMessage,
      { type: 'process_sync_batch' }
    >[]
  }
  last<T extends OutgoingClientMessage['type']>(type: T) {
    return [...this.sent].reverse().find((m) => m.type === type) as Extract<OutgoingClientMessage, { type: T }> | undefined
  }
}

let n = 0
export async function makeEngine(opts: Partial<EngineOptions> = {}) {
  const db = new FinwiseDB(`test-${Date.now()}-${n++}`)
  await db.open()
  const transport = new FakeTransport()
  let clock = Date.parse('2026-11-25T12:00:00.000Z')
  const now = () => clock
  const engine = new SyncEngine({ db, tenantId: TENANT, transport, now, random: () => 0.5, ...opts })
  await engine.init()
  return {
    db,
    engine,
    transport,
    advance(ms: number) {
      clock += ms
    },
    setClock(ms: number) {
      clock = ms
    },
  }
}

export function account(id: string, name: string, extra: Record<string, unknown> = {}) {
  return { id, name, isActive: true, isOfflineBudget: false, accountGroupId: 'g1', balance: 0, offset: 0, ...extra }
}

export function dataUpdate(type: string, op: string, entity: Record<string, unknown>, seq: number) {
  return {
    event_type: 'data_update',
    tenant_id: TENANT,
    entity_type: type,
    operation_type: op,
    seq,
    updated_at: entity.updated_at,
    data: { single_entity: entity },
  }
}

export function load(payload: Record<string, unknown[]>, seq: number, extra: Record<string, unknown> = {}) {
  const full: Record<string, unknown[]> = {
    accounts: [], account_groups: [], categories: [], category_groups: [], recipients: [], tags: [],
    automation_rules: [], planning_transactions: [], transactions: [], ...payload,
  }
  return { event_type: 'initial_data_load', tenant_id: TENANT, payload: full, seq, ...extra }
}
