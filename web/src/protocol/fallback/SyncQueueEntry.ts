// PLACEHOLDER until ts-rs output is committed.
import type { Operation } from "./Operation";
export type SyncQueueEntry = { id: string, tenantId: string, entityType: string, entityId: string, operationType: Operation, payload: Record<string, unknown> | null, timestamp?: number, };
