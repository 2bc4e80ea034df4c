// PLACEHOLDER until ts-rs output is committed.
export type DataUpdateData = { single_entity: Record<string, unknown>, };
