// PLACEHOLDER until ts-rs output is committed.
import type { EntityType } from "./EntityType";
import type { SyncQueueEntry } from "./SyncQueueEntry";
export type OutgoingClientMessage = { "type": "process_sync_entry", payload: SyncQueueEntry, } | { "type": "process_sync_batch", entries: Array<SyncQueueEntry>, } | { "type": "request_initial_data", tenant_id: string, since?: number, } | { "type": "ping", timestamp: number, } | { "type": "data_status_request", tenant_id: string, entity_types: Array<EntityType> | null, } | { "type": "tenant_disconnect", tenant_id: string, reason: string, };
