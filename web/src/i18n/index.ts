/**
 * Language and locale of the web app: German and English (vue-i18n, composition mode).
 *
 * Messages live per area in `messages/<area>.ts`, each exporting `{ en: {...}, de: {...} }` under
 * its own top-level key, so screens add their strings without touching each other's files.
 * Wire values (account types such as `giro`, transaction types such as `EXPENSE`) stay on the wire
 * as they are; only their labels are translated (`enums.ts`). Money and dates are formatted by the
 * chosen locale (`format.ts`).
 */
import { createI18n } from 'vue-i18n'
import common from './messages/common'
import enums from './messages/enums'
import app from './messages/app'
import auth from './messages/auth'
import categories from './messages/categories'
import errors from './messages/errors'
import household from './messages/household'
import lists from './messages/lists'
import sync from './messages/sync'
import tenants from './messages/tenants'
import transactions from './messages/transactions'
import accounts from './messages/accounts'
import transfers from './messages/transfers'
import budget from './messages/budget'
import planning from './messages/planning'
import rules from './messages/rules'
import reports from './messages/reports'

export const LOCALES = ['de', 'en'] as const
export type Locale = (typeof LOCALES)[number]
const STORAGE_KEY = 'finwise.locale'

type Area = { en: Record<string, unknown>; de: Record<string, unknown> }
export const AREAS: Record<string, Area> = {
  common, enums, app, auth, categories, errors, household, lists, sync, tenants, transactions,
  accounts, transfers, budget, planning, rules, reports,
}

function messagesFor(locale: Locale): Record<string, unknown> {
  return Object.fromEntries(Object.entries(AREAS).map(([k, v]) => [k, v[locale]]))
}

function initialLocale(): Locale {
  try {
    const stored = globalThis.localStorage?.getItem(STORAGE_KEY)
    if (stored === 'de' || stored === 'en') return stored
  } catch {
    // storage not available (tests, private mode): fall through to the browser's language
  }
  const nav = globalThis.navigator?.language ?? 'de'
  return nav.toLowerCase().startsWith('en') ? 'en' : 'de'
}

type Messages = Record<string, unknown>
export const i18n = createI18n<[Messages], Locale, false>({
  legacy: false,
  locale: initialLocale(),
  fallbackLocale: 'en',
  messages: { de: messagesFor('de'), en: messagesFor('en') },
})

export function currentLocale(): Locale {
  return i18n.global.locale.value as Locale
}

export function setLocale(locale: Locale): void {
  i18n.global.locale.value = locale
  try {
    globalThis.localStorage?.setItem(STORAGE_KEY, locale)
  } catch {
    // not persisted; the choice still holds for this page
  }
  if (globalThis.document) document.documentElement.lang = locale
}
