// PLACEHOLDER until ts-rs output is committed.
import type { EntityType } from "./EntityType";
export type InitialDataLoad = { event_type: "initial_data_load", tenant_id: string, payload: Record<string, Array<Record<string, unknown>>>, seq: number, deleted?: { [key in EntityType]?: Array<string> }, reset: boolean, delta: boolean, part?: number, more: boolean, };
