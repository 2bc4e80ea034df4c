// PLACEHOLDER until ts-rs output is committed.
export type EntityChecksum = { entity_id: string, checksum: string, last_modified: number, };
