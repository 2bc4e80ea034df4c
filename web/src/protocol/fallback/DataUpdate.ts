// PLACEHOLDER until ts-rs output is committed.
import type { DataUpdateData } from "./DataUpdateData";
import type { EntityType } from "./EntityType";
import type { Operation } from "./Operation";
export type DataUpdate = { event_type: "data_update", tenant_id: string, entity_type: EntityType, operation_type: Operation, seq: number, updated_at: string, data: DataUpdateData, };
