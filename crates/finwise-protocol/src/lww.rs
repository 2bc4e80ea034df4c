//! Last-writer-wins with one deterministic tie-break, shared by the server and the clients.
//!
//! A version of an entity is `(updated_at, deleted, content)`. Deletes are versions too
//! (tombstones), so a stale update cannot resurrect a deleted entity and a newer one can.
//!
//! **Server rule** ([`decide`]): a strictly newer `updated_at` wins, a strictly older one loses.
//! On a tie the version that reaches the server later wins — the server is the single point that
//! orders every write of a tenant — unless it is identical to the stored one (then nothing
//! changes). The tie winner is restamped to `stored + 1 ms`, so that every version the server ever
//! stores of an entity has a distinct, increasing `updated_at`, and the restamped version is sent
//! back to its writer. A 0.4 client that edits without refreshing `updated_at` therefore never
//! loses its edit, and two replicas with equal `updated_at` always hold equal content — which is
//! what makes the tenant digest (ids and timestamps only) a proof of convergence.
//!
//! **Client rule** ([`client_accepts`]): a version from the server replaces the local one when it
//! is not older (`>=`): the server has already applied the tie-break. A local change that is
//! still queued is never replaced; the server will decide it.

/// What the server knows about the stored version of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion<'a> {
    pub updated_at_ms: i64,
    pub deleted: bool,
    /// The content key (see `EntityDef::content_key`); ignored for tombstones.
    pub content: &'a str,
}

/// The server's decision for an incoming version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store the incoming version with this `updated_at` (equal to the incoming one unless restamped).
    Apply { updated_at_ms: i64, restamped: bool },
    /// The incoming version is identical to the stored one; nothing to do.
    Unchanged,
    /// The stored version is newer; the writer must be sent the stored version.
    Lose,
}

/// Decides an incoming version against the stored one (see the module docs).
pub fn decide(stored: Option<&StoredVersion<'_>>, incoming: &StoredVersion<'_>) -> Decision {
    let Some(stored) = stored else {
        return Decision::Apply { updated_at_ms: incoming.updated_at_ms, restamped: false };
    };
    use std::cmp::Ordering::*;
    match incoming.updated_at_ms.cmp(&stored.updated_at_ms) {
        Greater => Decision::Apply { updated_at_ms: incoming.updated_at_ms, restamped: false },
        Less => Decision::Lose,
        Equal => {
            let same = incoming.deleted == stored.deleted && (incoming.deleted || incoming.content == stored.content);
            if same {
                Decision::Unchanged
            } else {
                Decision::Apply { updated_at_ms: stored.updated_at_ms + 1, restamped: true }
            }
        }
    }
}

/// Whether a client replaces its local version (`local_updated_at_ms`, `None` if it has none)
/// with one received from the server. `local_pending` is true when a local change of this entity
/// is still queued: then the local version stays until the server has decided it.
pub fn client_accepts(local_updated_at_ms: Option<i64>, local_pending: bool, incoming_updated_at_ms: i64) -> bool {
    if local_pending {
        return false;
    }
    match local_updated_at_ms {
        None => true,
        Some(local) => incoming_updated_at_ms >= local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: i64, deleted: bool, content: &str) -> StoredVersion<'_> {
        StoredVersion { updated_at_ms: ts, deleted, content }
    }

    #[test]
    fn newer_wins_older_loses() {
        assert_eq!(
            decide(Some(&v(10, false, "a")), &v(11, false, "b")),
            Decision::Apply { updated_at_ms: 11, restamped: false }
        );
        assert_eq!(decide(Some(&v(10, false, "a")), &v(9, false, "b")), Decision::Lose);
        assert_eq!(decide(None, &v(9, true, "")), Decision::Apply { updated_at_ms: 9, restamped: false });
    }

    #[test]
    fn tie_keeps_the_later_edit_and_restamps_it() {
        assert_eq!(
            decide(Some(&v(10, false, "a")), &v(10, false, "b")),
            Decision::Apply { updated_at_ms: 11, restamped: true }
        );
        assert_eq!(decide(Some(&v(10, false, "a")), &v(10, false, "a")), Decision::Unchanged);
        assert_eq!(decide(Some(&v(10, true, "")), &v(10, true, "x")), Decision::Unchanged);
        assert_eq!(
            decide(Some(&v(10, true, "")), &v(10, false, "a")),
            Decision::Apply { updated_at_ms: 11, restamped: true }
        );
    }

    #[test]
    fn tombstone_blocks_stale_update() {
        assert_eq!(decide(Some(&v(20, true, "")), &v(15, false, "a")), Decision::Lose);
        assert!(matches!(decide(Some(&v(20, true, "")), &v(25, false, "a")), Decision::Apply { .. }));
    }

    #[test]
    fn client_keeps_pending_and_accepts_ties_from_server() {
        assert!(!client_accepts(Some(5), true, 100));
        assert!(client_accepts(Some(5), false, 5));
        assert!(!client_accepts(Some(6), false, 5));
        assert!(client_accepts(None, false, 0));
    }
}
