// PLACEHOLDER until ts-rs output is committed.
import type { EntityChecksum } from "./EntityChecksum";
export type DataStatusResponse = { type: "data_status_response", tenant_id: string, entity_checksums: { [key in string]?: Array<EntityChecksum> }, last_sync_time: number, server_time: number, tenant_digest: string, seq: number, entity_count: number, };
