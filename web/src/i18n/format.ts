/** Money and dates by the chosen locale (de: 1.234,50 € and 31.12.2026; en: €1,234.50 and 12/31/2026). */
import { currentLocale } from './index'

const BCP47 = { de: 'de-DE', en: 'en-GB' } as const

export function bcp47(): string {
  return BCP47[currentLocale()]
}

export function formatMoney(x: number, currency = 'EUR'): string {
  return new Intl.NumberFormat(bcp47(), { style: 'currency', currency }).format(x)
}

/** A wire date (`YYYY-MM-DD` or an ISO timestamp) as the locale writes it; the input unchanged if unparsable. */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return ''
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso)
  if (!m) return iso
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])))
  return new Intl.DateTimeFormat(bcp47(), { timeZone: 'UTC', year: 'numeric', month: '2-digit', day: '2-digit' }).format(d)
}

/** A month (`YYYY-MM`) as the locale names it, e.g. "Dezember 2026". */
export function formatMonth(ym: string): string {
  const m = /^(\d{4})-(\d{2})/.exec(ym)
  if (!m) return ym
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1))
  return new Intl.DateTimeFormat(bcp47(), { timeZone: 'UTC', year: 'numeric', month: 'long' }).format(d)
}
