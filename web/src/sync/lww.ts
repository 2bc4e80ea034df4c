import { parseMs } from './time'

/**
 * The client half of the tie-break rule shared with the server (finwise-protocol `lww.rs`):
 *
 * - The server decides every write: newer `updated_at` wins, older loses, and on equal
 *   timestamps the later-arriving write wins and is restamped to stored + 1 ms.
 * - So a version from the server replaces the local one when its `updated_at` is not older
 *   (`>=`): the server has already broken any tie.
 * - A local change still in the sync queue is never replaced or deleted by incoming data
 *   (pending-update and pending-delete protection); the server will decide it and send the
 *   winner back.
 */
export function clientAccepts(
  localUpdatedAt: string | null | undefined,
  localExists: boolean,
  localPending: boolean,
  incomingUpdatedAt: string | null | undefined,
): boolean {
  if (localPending) return false
  if (!localExists) return true
  const incoming = parseMs(incomingUpdatedAt)
  const local = parseMs(localUpdatedAt)
  if (local === null) return true
  if (incoming === null) return false
  return incoming >= local
}
