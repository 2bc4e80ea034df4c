/**
 * Calendar arithmetic on wire dates (`YYYY-MM-DD`) and months (`YYYY-MM`), in UTC so that no time
 * zone shifts a day. Month steps clamp the day to the month's length (Jan 31 + 1 month = Feb 28),
 * as dayjs does in 0.4.
 */
export function parseDate(d: string): { y: number; m: number; d: number } {
  const x = /^(\d{4})-(\d{2})-(\d{2})/.exec(d)
  if (!x) throw new Error(`not a date: ${d}`)
  return { y: Number(x[1]), m: Number(x[2]), d: Number(x[3]) }
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0')

export function fmt(y: number, m: number, d: number): string {
  return `${pad(y, 4)}-${pad(m)}-${pad(d)}`
}

export function daysInMonth(y: number, m: number): number {
  return new Date(Date.UTC(y, m, 0)).getUTCDate()
}

export function addDays(date: string, n: number): string {
  const { y, m, d } = parseDate(date)
  const t = new Date(Date.UTC(y, m - 1, d + n))
  return fmt(t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate())
}

export function addMonths(date: string, n: number): string {
  const { y, m, d } = parseDate(date)
  const idx = y * 12 + (m - 1) + n
  const ny = Math.floor(idx / 12)
  const nm = (idx % 12) + 1
  return fmt(ny, nm, Math.min(d, daysInMonth(ny, nm)))
}

/** 0 = Sunday … 6 = Saturday. */
export function weekday(date: string): number {
  const { y, m, d } = parseDate(date)
  return new Date(Date.UTC(y, m - 1, d)).getUTCDay()
}

export function monthOf(date: string): string {
  return date.slice(0, 7)
}

export function shiftMonth(ym: string, n: number): string {
  return monthOf(addMonths(`${ym}-01`, n))
}

export function monthStart(ym: string): string {
  return `${ym}-01`
}

export function monthEnd(ym: string): string {
  const [y, m] = ym.split('-').map(Number)
  return fmt(y, m, daysInMonth(y, m))
}

/** The months from `from` to `to` inclusive (`YYYY-MM`). */
export function monthsBetween(from: string, to: string): string[] {
  const out: string[] = []
  for (let m = from; m <= to && out.length < 1200; m = shiftMonth(m, 1)) out.push(m)
  return out
}

/** The date part of a wire date or timestamp. */
export function dateOnly(s: string | null | undefined): string {
  return (s ?? '').slice(0, 10)
}
