// PLACEHOLDER until ts-rs output is committed.
import type { Operation } from "./Operation";
export type SyncAck = { type: "sync_ack", id: string, status: "processed", entityId: string, entityType: string, operationType: Operation, seq: number, applied: boolean, duplicate: boolean, updated_at?: string, };
