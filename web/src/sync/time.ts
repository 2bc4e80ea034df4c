/** Timestamps: epoch milliseconds internally, `YYYY-MM-DDTHH:MM:SS.mmmZ` on the wire. */

const HAS_ZONE = /(Z|[+-]\d\d:?\d\d)$/i

/** Parses an ISO-8601 timestamp to epoch ms; a timestamp without zone is UTC (as 0.4 stored it). */
export function parseMs(s: string | null | undefined): number | null {
  if (typeof s !== 'string' || s.trim() === '') return null
  let t = s.trim().replace(' ', 'T')
  if (!HAS_ZONE.test(t)) t += 'Z'
  // JS Date keeps milliseconds only; longer fractions are truncated like the server does.
  t = t.replace(/(\.\d{3})\d+/, '$1')
  const ms = Date.parse(t)
  return Number.isNaN(ms) ? null : ms
}

/** Formats epoch ms as `YYYY-MM-DDTHH:MM:SS.mmmZ`. */
export function formatMs(ms: number): string {
  return new Date(ms).toISOString()
}

/** Canonical wire form of a timestamp string (or null when it cannot be parsed). */
export function canonical(s: string | null | undefined): string | null {
  const ms = parseMs(s)
  return ms === null ? null : formatMs(ms)
}

/**
 * The `updated_at` of a new local version: max(now, previous + 1 ms), so every local version of
 * an entity is strictly newer than the one it replaces, even within one millisecond or when the
 * previous stamp came from a clock that is slightly ahead.
 */
export function nextStamp(previous: string | null | undefined, now: number = Date.now()): string {
  const prev = parseMs(previous)
  return formatMs(prev === null ? now : Math.max(now, prev + 1))
}

/** Today's date as `YYYY-MM-DD` (local calendar). */
export function today(d: Date = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`
}
