/**
 * Reads an amount typed in either locale: "1.234,56", "1234,56", "1,234.56", "1234.56", "-42,5".
 * A comma after the last dot (or a lone comma) is the decimal separator; NaN when unreadable.
 */
export function parseAmount(input: string | number | null | undefined): number {
  if (typeof input === 'number') return input
  let s = String(input ?? '').trim().replace(/[\s€]/g, '')
  if (!s) return NaN
  const lastComma = s.lastIndexOf(',')
  const lastDot = s.lastIndexOf('.')
  if (lastComma > lastDot) s = s.replace(/\./g, '').replace(',', '.')
  else if (lastDot > lastComma && lastComma >= 0) s = s.replace(/,/g, '')
  else if ((s.match(/\./g) ?? []).length > 1) s = s.replace(/\./g, '')
  if (!/^[+-]?\d+(\.\d+)?$/.test(s)) return NaN
  return Math.round(Number(s) * 100) / 100
}

/** An amount for an input field in the locale's writing (no grouping). */
export function amountText(x: number | null | undefined, locale: string): string {
  if (x == null || !Number.isFinite(x)) return ''
  const s = String(Math.round(x * 100) / 100)
  return locale === 'de' ? s.replace('.', ',') : s
}
