/**
 * What a failed REST call means for the user, as a message key of the `errors` area and its
 * parameters: known server refusals get their own translated explanation; anything else shows
 * the server's own words (its `detail`) with the status.
 */
import { ApiError } from '../sync/api'

export interface ErrorMessage {
  key: string
  params?: Record<string, string | number>
}

const KNOWN: [status: number, detail: RegExp, key: string][] = [
  [409, /at least one owner/i, 'errors.lastOwner'],
  [403, /only an owner/i, 'errors.ownerOnly'],
  [403, /not a member/i, 'errors.notMember'],
  [422, /no user with this e-mail/i, 'errors.noSuchUser'],
  [401, /incorrect username or password/i, 'errors.badCredentials'],
  [400, /email already registered/i, 'errors.emailTaken'],
  [400, /username already taken/i, 'errors.usernameTaken'],
  [400, /already exists for this user/i, 'errors.tenantNameTaken'],
]

export function describeError(e: unknown): ErrorMessage {
  if (e instanceof TypeError) return { key: 'errors.network' } // fetch: no answer at all
  if (!(e instanceof ApiError)) return { key: 'errors.unexpected', params: { detail: e instanceof Error ? e.message : String(e) } }
  const known = KNOWN.find(([status, re]) => status === e.status && re.test(e.message))
  if (known) return { key: known[2] }
  if (e.status === 401) return { key: 'errors.unauthorized' }
  return { key: 'errors.server', params: { status: e.status, detail: e.message } }
}

/** `describeError` translated by the given `t` (of `useI18n`). */
export function errorText(t: (key: string, params?: Record<string, unknown>) => string, e: unknown): string {
  const m = describeError(e)
  return t(m.key, m.params ?? {})
}
