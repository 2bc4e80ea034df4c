import type { DataStatusResponse, EntityType } from '../protocol'
import type { EngineContext, EngineOptions } from './context'
import type { DigestState } from './db'
import { tenantDigest } from './digest'
import { ENTITY_TYPES } from './entities'
import type { Inbox } from './inbox'

const META_DIGEST = 'lastDigest'

/**
 * The engine's consistency check: asks for `data_status_response`, compares the server's
 * `tenant_digest` with the local one while nothing is queued or loading, and after two
 * consecutive mismatches (outside the cooldown) asks the inbox for a full load.
 */
export class DigestCheck {
  private readonly ctx: EngineContext
  private readonly inbox: Inbox
  private readonly resyncCooldownMs: number
  private readonly recheckDelayMs: number
  private timer: ReturnType<typeof setTimeout> | null = null
  private lastDigest: DigestState | null = null
  /** Consecutive digest mismatches; one may be a change still in flight, two trigger a reload. */
  private mismatches = 0
  private readonly waiters: ((r: DataStatusResponse) => void)[] = []

  constructor(ctx: EngineContext, opts: EngineOptions, inbox: Inbox) {
    this.ctx = ctx
    this.inbox = inbox
    this.resyncCooldownMs = opts.resyncCooldownMs ?? 10_000
    this.recheckDelayMs = opts.recheckDelayMs ?? 1500
  }

  /** Loads the result of the last comparison. */
  async init(): Promise<void> {
    this.lastDigest = (await this.ctx.db.getMeta<DigestState>(META_DIGEST)) ?? null
  }

  /** The result of the last comparison (persisted). */
  get last(): DigestState | null {
    return this.lastDigest
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer)
  }

  /** The local tenant digest over every entity in the store. */
  async localDigest(): Promise<string> {
    const rows: [EntityType, string, string | null | undefined][] = []
    for (const type of ENTITY_TYPES) {
      await this.ctx.db.entities(type).each((e) => rows.push([type, e.id, e.updated_at]))
    }
    return tenantDigest(rows)
  }

  scheduleDigestCheck(delayMs = 300): void {
    if (this.ctx.closed()) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = null
      this.requestDigest()
    }, delayMs)
  }

  requestDigest(): boolean {
    return !!this.ctx.transport()?.send({ type: 'data_status_request', tenant_id: this.ctx.tenantId, entity_types: null })
  }

  /** Resolves with the next `data_status_response` (used by tests and the debug hook). */
  nextDataStatus(): Promise<DataStatusResponse> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  async handleDataStatus(msg: DataStatusResponse): Promise<void> {
    for (const w of this.waiters.splice(0)) w(msg)
    if (msg.tenant_id && msg.tenant_id !== this.ctx.tenantId) return
    if (typeof msg.tenant_digest !== 'string') return
    // Only a store without queued changes can be compared with the server.
    if ((await this.ctx.db.syncQueue.count()) > 0 || this.inbox.loading) return
    const local = await this.localDigest()
    const equal = local === msg.tenant_digest
    this.lastDigest = { server: msg.tenant_digest, local, equal, at: this.ctx.now(), serverSeq: msg.seq }
    await this.ctx.db.setMeta(META_DIGEST, this.lastDigest)
    this.ctx.emitState()
    if (equal) {
      this.mismatches = 0
      return
    }
    this.mismatches++
    if (this.mismatches === 1) {
      // A data_update may still be on its way: look again shortly before reloading everything.
      this.scheduleDigestCheck(this.recheckDelayMs)
    } else if (this.ctx.now() - this.inbox.lastFullLoadAt >= this.resyncCooldownMs) {
      this.ctx.log('digest mismatch; requesting a full load')
      this.mismatches = 0
      this.inbox.requestFullLoad()
    }
  }
}
