import { describe, expect, it } from 'vitest'
import { AREAS, i18n, setLocale } from '../src/i18n'
import { describeError } from '../src/i18n/apiErrors'
import { ApiError } from '../src/sync/api'

/** Every leaf key of a message tree, dotted (`nav.accounts`). */
function keys(tree: unknown, prefix = ''): string[] {
  if (typeof tree !== 'object' || tree === null) return [prefix]
  return Object.entries(tree).flatMap(([k, v]) => keys(v, prefix ? `${prefix}.${k}` : k))
}

/** The `{placeholders}` of a message. */
const params = (s: unknown) => [...String(s).matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort()
const leaf = (tree: unknown, key: string) => key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], tree)

describe('i18n', () => {
  it.each(Object.keys(AREAS))('area %s has the same keys in German and English, each a non-empty text', (area) => {
    const { en, de } = AREAS[area]
    expect(keys(de).sort()).toEqual(keys(en).sort())
    for (const k of keys(en)) {
      for (const tree of [en, de]) {
        const v = leaf(tree, k)
        expect(typeof v, `${area}.${k}`).toBe('string')
        expect((v as string).trim(), `${area}.${k}`).not.toBe('')
      }
      // a placeholder of one language exists in the other
      expect(params(leaf(de, k)), `${area}.${k}`).toEqual(params(leaf(en, k)))
    }
  })

  it('translates a message by the chosen locale', () => {
    setLocale('de')
    expect(i18n.global.t('app.nav.transactions')).toBe('Buchungen')
    expect(i18n.global.t('app.lost.revoked', { name: 'WG' })).toContain('„WG“')
    setLocale('en')
    expect(i18n.global.t('app.nav.transactions')).toBe('Transactions')
  })
})

describe('server errors', () => {
  it.each([
    [409, 'a tenant must keep at least one owner: make another member an owner first, or delete the tenant', 'errors.lastOwner'],
    [403, 'only an owner can remove other members; a member can only leave', 'errors.ownerOnly'],
    [403, 'only an owner of the tenant may do this', 'errors.ownerOnly'],
    [403, 'not a member of this tenant', 'errors.notMember'],
    [422, 'no user with this e-mail is registered here', 'errors.noSuchUser'],
    [401, 'Incorrect username or password', 'errors.badCredentials'],
    [401, 'invalid or expired access token', 'errors.unauthorized'],
    [400, 'Email already registered', 'errors.emailTaken'],
  ])('%i %s → %s', (status, detail, key) => {
    expect(describeError(new ApiError(status, detail))).toEqual({ key })
  })

  it('shows the server’s own words for anything else, and names a lost connection', () => {
    expect(describeError(new ApiError(422, 'name must not be empty'))).toEqual({
      key: 'errors.server', params: { status: 422, detail: 'name must not be empty' },
    })
    expect(describeError(new TypeError('Failed to fetch'))).toEqual({ key: 'errors.network' })
    setLocale('de')
    expect(i18n.global.t('errors.server', { status: 422, detail: 'x' })).toBe('Der Server hat das abgelehnt (422): x')
  })
})
