import { defineStore } from 'pinia'
import { computed, markRaw, ref, shallowRef } from 'vue'
import Dexie from 'dexie'
import { ApiClient, type Session, type Tenant } from '../sync/api'
import { dbName } from '../sync/db'
import type { AccessLost } from '../sync/ws'
import type { SyncState } from '../sync/engine'
import { startTenantSync, type TenantSync } from '../sync/tenantSync'
import { allEntityStores } from './entities'

export const api = new ApiClient()

const tenantsKey = (userId: string) => `finwise.tenants.${userId}`
const activeKey = (userId: string) => `finwise.activeTenant.${userId}`

function readJson<T>(key: string, fallback: T): T {
  try {
    const raw = localStorage.getItem(key)
    return raw ? (JSON.parse(raw) as T) : fallback
  } catch {
    return fallback
  }
}

/** Session, tenants and the active tenant's sync. */
export const useAppStore = defineStore('app', () => {
  const session = ref<Session | null>(api.session)
  const sessionExpired = ref(false)
  const tenants = ref<Tenant[]>(session.value ? readJson(tenantsKey(session.value.user.uuid), []) : [])
  const activeTenantId = ref<string | null>(
    session.value ? localStorage.getItem(activeKey(session.value.user.uuid)) : null,
  )
  const sync = shallowRef<TenantSync | null>(null)
  const syncState = shallowRef<SyncState | null>(null)
  const activeTenant = computed(() => tenants.value.find((t) => t.uuid === activeTenantId.value) ?? null)
  let unsubscribeState: (() => void) | null = null
  /** The tenant the user just lost access to (shown until dismissed), or null. */
  const lostTenant = ref<{ id: string; name: string; why: AccessLost } | null>(null)
  /** Tenants the user is leaving or deleting right now: their socket's close is expected, not news. */
  const ownExits = new Set<string>()

  api.onSession((s) => {
    session.value = s
    sessionExpired.value = api.sessionExpired
  })

  async function register(name: string, email: string, password: string) {
    await api.register(name, email, password)
  }

  async function login(usernameOrEmail: string, password: string) {
    const s = await api.login(usernameOrEmail, password)
    tenants.value = readJson(tenantsKey(s.user.uuid), [])
    activeTenantId.value = localStorage.getItem(activeKey(s.user.uuid))
    await refreshTenants()
  }

  async function logout() {
    await leaveTenant()
    if (session.value) localStorage.removeItem(activeKey(session.value.user.uuid))
    api.logout()
    tenants.value = []
  }

  function storeTenants(list: Tenant[]) {
    tenants.value = list
    if (session.value) localStorage.setItem(tenantsKey(session.value.user.uuid), JSON.stringify(list))
  }

  async function refreshTenants() {
    if (!session.value) return
    try {
      const before = tenants.value
      const now = await api.listTenants()
      storeTenants(now)
      // The server's list is the truth: a tenant it no longer lists was lost while we were away.
      for (const t of before) if (!now.some((x) => x.uuid === t.uuid)) await accessLost(t.uuid, 'gone', t.name)
    } catch (e) {
      console.warn('tenant list not refreshed (offline?)', e)
    }
  }

  async function createTenant(name: string): Promise<Tenant> {
    const t = await api.createTenant(name)
    await refreshTenants()
    if (!tenants.value.some((x) => x.uuid === t.uuid)) tenants.value = [...tenants.value, t]
    return t
  }

  let selecting: { id: string; done: Promise<void> } | null = null

  /** Opens a tenant (one at a time: a second call for the same tenant waits for the first). */
  async function selectTenant(id: string) {
    if (selecting?.id === id) return selecting.done
    while (selecting) await selecting.done.catch(() => {})
    const done = doSelectTenant(id)
    selecting = { id, done }
    try {
      await done
    } finally {
      selecting = null
    }
  }

  async function doSelectTenant(id: string) {
    if (!session.value) throw new Error('not logged in')
    if (sync.value?.tenantId === id) return
    await leaveTenant()
    activeTenantId.value = id
    localStorage.setItem(activeKey(session.value.user.uuid), id)
    const ts = await startTenantSync(api, session.value.user.uuid, id, {}, (why) => void accessLost(id, why))
    sync.value = markRaw(ts)
    unsubscribeState = ts.engine.onState((s) => (syncState.value = s))
    await Promise.all(allEntityStores().map((s) => s.bind(ts.engine)))
    exposeDebugHook(ts)
  }

  async function leaveTenant() {
    unsubscribeState?.()
    unsubscribeState = null
    for (const s of allEntityStores()) s.unbind()
    sync.value?.stop()
    sync.value = null
    syncState.value = null
    activeTenantId.value = null
  }

  /**
   * The user may no longer enter this tenant: close it, drop it from the list and delete this
   * device's copy of its data (queued changes included: the server would refuse them).
   */
  async function forgetTenant(id: string) {
    const user = session.value?.user.uuid
    if (!user) return
    if (sync.value?.tenantId === id || activeTenantId.value === id) {
      await leaveTenant()
      localStorage.removeItem(activeKey(user))
    }
    storeTenants(tenants.value.filter((t) => t.uuid !== id))
    await Dexie.delete(dbName(user, id)).catch((e) => console.warn('local data of the tenant not deleted', e))
  }

  /** The server closed the tenant's socket for good (removed, tenant deleted) or no longer lists it. */
  async function accessLost(id: string, why: AccessLost, knownName?: string) {
    if (ownExits.has(id)) return
    const name = knownName ?? tenants.value.find((t) => t.uuid === id)?.name ?? id
    await forgetTenant(id)
    lostTenant.value = { id, name, why }
  }

  /** Runs the user's own leave or delete of a tenant; on success the tenant is forgotten here. */
  async function exitTenant(id: string, action: () => Promise<unknown>) {
    ownExits.add(id)
    try {
      await action()
      await forgetTenant(id)
    } finally {
      ownExits.delete(id)
    }
  }

  async function renameTenant(id: string, name: string) {
    const t = await api.renameTenant(id, name)
    storeTenants(tenants.value.map((x) => (x.uuid === id ? { ...x, name: t.name } : x)))
  }

  /** Restores the last active tenant after a reload (works offline: all state is local). */
  async function resume() {
    if (session.value && activeTenantId.value && !sync.value) await selectTenant(activeTenantId.value)
  }

  return {
    session, sessionExpired, tenants, activeTenantId, activeTenant, sync, syncState,
    lostTenant,
    register, login, logout, refreshTenants, createTenant, selectTenant, leaveTenant, resume,
    forgetTenant, accessLost, exitTenant, renameTenant,
  }
})

/** For end-to-end tests and debugging: the local digest and the server's, and the queue, from the console. */
function exposeDebugHook(ts: TenantSync) {
  ;(globalThis as Record<string, unknown>).__finwise = {
    tenantId: ts.tenantId,
    localDigest: () => ts.engine.localDigest(),
    state: () => ts.engine.state(),
    /** The queued changes, oldest first. */
    queue: () => ts.db.syncQueue.orderBy('order').toArray(),
    serverStatus: async () => {
      const p = ts.engine.nextDataStatus()
      if (!ts.engine.requestDigest()) throw new Error('offline')
      return p
    },
  }
}
