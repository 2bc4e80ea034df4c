// PLACEHOLDER until ts-rs output is committed.
import type { NackReason } from "./NackReason";
import type { Operation } from "./Operation";
export type SyncNack = { type: "sync_nack", id: string, status: "failed", entityId?: string, entityType?: string, operationType?: Operation, reason: NackReason, detail: string, retryable: boolean, };
