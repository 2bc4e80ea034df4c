/** REST client for the FinWise Sync server: register, login, token refresh, tenants. */

export interface User {
  name: string
  email: string
  uuid: string
}

export interface Session {
  user: User
  accessToken: string
  refreshToken: string
  /** Epoch ms when the access token expires. */
  expiresAt: number
  /** Lifetime of the access token in ms (`expires_in`). */
  ttlMs?: number
}

export interface Tenant {
  name: string
  uuid: string
  user_id: string
  createdAt?: string
  updatedAt?: string
}

export type Role = 'owner' | 'member'

/** A member of a tenant (`GET /tenants/{id}/members`). */
export interface Member {
  user_id: string
  name: string
  email: string
  role: Role
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

interface TokenResponse {
  access_token: string
  refresh_token: string
  token_type?: string
  expires_in?: number
}

export interface ApiOptions {
  base?: string
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>
  fetchImpl?: typeof fetch
  now?: () => number
  /** Refresh the access token when it expires within this many ms. */
  refreshMarginMs?: number
}

const SESSION_KEY = 'finwise.session'

async function errorDetail(res: Response): Promise<string> {
  try {
    const body = await res.json()
    if (typeof body?.detail === 'string') return body.detail
    if (Array.isArray(body?.detail)) return body.detail.map((d: { msg?: string }) => d.msg).join('; ')
    return JSON.stringify(body)
  } catch {
    return `${res.status} ${res.statusText}`
  }
}

export class ApiClient {
  session: Session | null = null
  /** Set when the refresh token was refused: the user must log in again. */
  sessionExpired = false
  private refreshing: Promise<boolean> | null = null
  private readonly base: string
  private readonly storage: ApiOptions['storage']
  private readonly fetchImpl: typeof fetch
  private readonly now: () => number
  private readonly margin: number
  private listeners = new Set<(s: Session | null) => void>()

  constructor(opts: ApiOptions = {}) {
    this.base = opts.base ?? ''
    this.storage = opts.storage ?? globalThis.localStorage
    this.fetchImpl = opts.fetchImpl ?? ((...a) => globalThis.fetch(...a))
    this.now = opts.now ?? Date.now
    this.margin = opts.refreshMarginMs ?? 60_000
    try {
      const raw = this.storage?.getItem(SESSION_KEY)
      if (raw) this.session = JSON.parse(raw)
    } catch {
      this.session = null
    }
  }

  onSession(fn: (s: Session | null) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  private setSession(s: Session | null): void {
    this.session = s
    if (s) this.storage?.setItem(SESSION_KEY, JSON.stringify(s))
    else this.storage?.removeItem(SESSION_KEY)
    for (const fn of this.listeners) fn(s)
  }

  private async json<T>(path: string, init: RequestInit): Promise<T> {
    const res = await this.fetchImpl(this.base + path, init)
    if (!res.ok) throw new ApiError(res.status, await errorDetail(res))
    if (res.status === 204) return undefined as T
    return (await res.json()) as T
  }

  async register(name: string, email: string, password: string): Promise<User> {
    return this.json<User>('/register', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name, email: email.trim().toLowerCase(), password }),
    })
  }

  async login(usernameOrEmail: string, password: string): Promise<Session> {
    const body = await this.json<User & TokenResponse>('/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username_or_email: usernameOrEmail.trim().toLowerCase(), password }),
    })
    const s: Session = {
      user: { name: body.name, email: body.email, uuid: body.uuid },
      accessToken: body.access_token,
      refreshToken: body.refresh_token,
      expiresAt: this.now() + (body.expires_in ?? 900) * 1000,
      ttlMs: (body.expires_in ?? 900) * 1000,
    }
    this.sessionExpired = false
    this.setSession(s)
    return s
  }

  logout(): void {
    this.setSession(null)
  }

  /** Rotates the token pair (`POST /token`, grant_type=refresh_token). */
  refresh(): Promise<boolean> {
    if (this.refreshing) return this.refreshing
    this.refreshing = (async () => {
      const s = this.session
      if (!s) return false
      try {
        const res = await this.fetchImpl(this.base + '/token', {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: s.refreshToken }).toString(),
        })
        if (res.status === 400 || res.status === 401) {
          this.sessionExpired = true
          for (const fn of this.listeners) fn(this.session)
          return false
        }
        if (!res.ok) return false
        const t = (await res.json()) as TokenResponse
        this.setSession({
          ...s,
          accessToken: t.access_token,
          refreshToken: t.refresh_token ?? s.refreshToken,
          expiresAt: this.now() + (t.expires_in ?? 900) * 1000,
          ttlMs: (t.expires_in ?? 900) * 1000,
        })
        return true
      } catch {
        return false // offline: keep the tokens
      } finally {
        this.refreshing = null
      }
    })()
    return this.refreshing
  }

  /** The access token, refreshed first when it expires soon (if the server is reachable). */
  async validToken(): Promise<string | null> {
    const s = this.session
    if (!s) return null
    // Refresh within the margin before expiry (at most half the token's lifetime).
    const margin = Math.min(this.margin, (s.ttlMs ?? Infinity) / 2)
    if (s.expiresAt - this.now() < margin) await this.refresh()
    return this.session?.accessToken ?? null
  }

  /** After a refused WebSocket upgrade: was it a 401? Then refresh; true when a new token exists. */
  async probeUnauthorized(): Promise<boolean> {
    const token = this.session?.accessToken
    if (!token) return false
    try {
      const res = await this.fetchImpl(this.base + '/tenants', { headers: { Authorization: `Bearer ${token}` } })
      if (res.status === 401) return this.refresh()
    } catch {
      /* offline */
    }
    return false
  }

  /** True only when the server answered with the caller's tenants and this one is not among them. */
  async tenantGone(tenantId: string): Promise<boolean> {
    try {
      return !(await this.listTenants()).some((t) => t.uuid === tenantId)
    } catch {
      return false // offline or refused: we cannot tell
    }
  }

  async authFetch<T>(path: string, init: RequestInit = {}): Promise<T> {
    const token = await this.validToken()
    const go = (t: string | null) =>
      this.fetchImpl(this.base + path, {
        ...init,
        headers: { ...(init.headers ?? {}), ...(t ? { Authorization: `Bearer ${t}` } : {}) },
      })
    let res = await go(token)
    if (res.status === 401 && (await this.refresh())) res = await go(this.session?.accessToken ?? null)
    if (!res.ok) throw new ApiError(res.status, await errorDetail(res))
    if (res.status === 204) return undefined as T
    return (await res.json()) as T
  }

  listTenants(): Promise<Tenant[]> {
    return this.authFetch<Tenant[]>('/tenants')
  }

  createTenant(name: string, uuid: string = globalThis.crypto.randomUUID()): Promise<Tenant> {
    return this.authFetch<Tenant>('/tenants', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ uuid, name, user_id: this.session?.user.uuid }),
    })
  }

  renameTenant(id: string, name: string): Promise<Tenant> {
    return this.authFetch<Tenant>(`/tenants/${encodeURIComponent(id)}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name }),
    })
  }

  /** Deletes the tenant and all its data on the server (owner only). */
  deleteTenant(id: string): Promise<Tenant> {
    return this.authFetch<Tenant>(`/tenants/${encodeURIComponent(id)}/complete`, { method: 'DELETE' })
  }

  listMembers(tenantId: string): Promise<Member[]> {
    return this.authFetch<Member[]>(`/tenants/${encodeURIComponent(tenantId)}/members`)
  }

  /** Adds a registered user by e-mail, or changes a member's role (owner only); the members after it. */
  setMember(tenantId: string, email: string, role: Role): Promise<Member[]> {
    return this.authFetch<Member[]>(`/tenants/${encodeURIComponent(tenantId)}/members`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: email.trim().toLowerCase(), role }),
    })
  }

  /** Removes a member (owner), or leaves (a member removing themselves). */
  removeMember(tenantId: string, userId: string): Promise<void> {
    return this.authFetch<void>(`/tenants/${encodeURIComponent(tenantId)}/members/${encodeURIComponent(userId)}`, {
      method: 'DELETE',
    })
  }
}
