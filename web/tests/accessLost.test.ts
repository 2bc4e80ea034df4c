import { beforeEach, describe, expect, it, vi } from 'vitest'
import Dexie from 'dexie'
import { createPinia, setActivePinia } from 'pinia'
import { FinwiseDB, dbName } from '../src/sync/db'

/** A Storage in memory (the app keeps the session and the tenant list in localStorage). */
function memoryStorage(): Storage {
  const m = new Map<string, string>()
  return {
    get length() {
      return m.size
    },
    clear: () => m.clear(),
    getItem: (k) => m.get(k) ?? null,
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
    key: (i) => [...m.keys()][i] ?? null,
  }
}

const USER = 'u-1'
const KEEP = { uuid: 't-keep', name: 'Keep', user_id: USER }
const LOST = { uuid: 't-lost', name: 'WG Sonnenweg', user_id: 'u-2' }

async function setup(serverTenants: object[]) {
  vi.stubGlobal('localStorage', memoryStorage())
  vi.resetModules() // a fresh ApiClient reads the stubbed storage
  localStorage.setItem('finwise.session', JSON.stringify({ user: { uuid: USER, name: 'U', email: 'u@x' }, accessToken: 'a', refreshToken: 'r', expiresAt: Date.now() + 3_600_000 }))
  localStorage.setItem(`finwise.tenants.${USER}`, JSON.stringify([KEEP, LOST]))
  localStorage.setItem(`finwise.activeTenant.${USER}`, LOST.uuid)
  vi.stubGlobal('fetch', async () => new Response(JSON.stringify(serverTenants), { status: 200, headers: { 'content-type': 'application/json' } }))
  // the lost tenant's local copy, with a queued change
  const db = new FinwiseDB(dbName(USER, LOST.uuid))
  await db.open()
  await db.table('tags').put({ id: 'tag1', name: 'x', updated_at: '2026-01-01T00:00:00.000Z' })
  db.close()
  setActivePinia(createPinia())
  const { useAppStore } = await import('../src/stores/app')
  return useAppStore()
}

beforeEach(() => vi.unstubAllGlobals())

describe('losing access to a tenant', () => {
  it('forgets the tenant: not listed, not active, its local database deleted, the user told', async () => {
    const app = await setup([KEEP])
    expect(await Dexie.exists(dbName(USER, LOST.uuid))).toBe(true)
    expect(app.activeTenantId).toBe(LOST.uuid)
    await app.accessLost(LOST.uuid, 'revoked')
    expect(app.lostTenant).toEqual({ id: LOST.uuid, name: 'WG Sonnenweg', why: 'revoked' })
    expect(app.tenants.map((t) => t.uuid)).toEqual([KEEP.uuid])
    expect(app.activeTenantId).toBeNull()
    expect(localStorage.getItem(`finwise.activeTenant.${USER}`)).toBeNull()
    expect(JSON.parse(localStorage.getItem(`finwise.tenants.${USER}`)!)).toEqual([KEEP])
    expect(await Dexie.exists(dbName(USER, LOST.uuid))).toBe(false)
  })

  it('a tenant the server no longer lists counts as lost when the list is refreshed', async () => {
    const app = await setup([KEEP])
    await app.refreshTenants()
    expect(app.lostTenant).toEqual({ id: LOST.uuid, name: 'WG Sonnenweg', why: 'gone' })
    expect(app.tenants.map((t) => t.uuid)).toEqual([KEEP.uuid])
    expect(await Dexie.exists(dbName(USER, LOST.uuid))).toBe(false)
  })

  it('the user’s own leave or delete is no news: forgotten without a message, and only when it succeeded', async () => {
    const app = await setup([KEEP, LOST])
    await expect(app.exitTenant(LOST.uuid, async () => Promise.reject(new Error('409')))).rejects.toThrow('409')
    expect(app.tenants.map((t) => t.uuid)).toEqual([KEEP.uuid, LOST.uuid])
    expect(await Dexie.exists(dbName(USER, LOST.uuid))).toBe(true)
    // the server closes the socket (1008) while the leave is under way
    await app.exitTenant(LOST.uuid, () => app.accessLost(LOST.uuid, 'revoked'))
    expect(app.lostTenant).toBeNull()
    expect(app.tenants.map((t) => t.uuid)).toEqual([KEEP.uuid])
    expect(await Dexie.exists(dbName(USER, LOST.uuid))).toBe(false)
  })
})
