import type { EntityType } from '../protocol'
import { canonical } from './time'

/** The digest of zero entities: SHA-256 of the empty string. */
export const EMPTY_DIGEST = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i]
  return a.length - b.length
}

/**
 * The v2 tenant digest: lowercase hex SHA-256 over the lines `"{entityType}\t{id}\t{updated_at}\n"`
 * of every live entity, sorted bytewise, `updated_at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
 */
export async function tenantDigest(
  live: Iterable<readonly [EntityType, string, string | null | undefined]>,
): Promise<string> {
  const enc = new TextEncoder()
  const lines: Uint8Array[] = []
  for (const [type, id, updatedAt] of live) {
    lines.push(enc.encode(`${type}\t${id}\t${canonical(updatedAt) ?? ''}\n`))
  }
  lines.sort(compareBytes)
  let total = 0
  for (const l of lines) total += l.length
  const buf = new Uint8Array(total)
  let off = 0
  for (const l of lines) {
    buf.set(l, off)
    off += l.length
  }
  const hash = await globalThis.crypto.subtle.digest('SHA-256', buf)
  return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, '0')).join('')
}
