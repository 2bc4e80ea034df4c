// PLACEHOLDER until ts-rs output is committed.
export type NackReason = "validation_error" | "unknown_entity_type" | "tenant_mismatch" | "clock_skew" | "duplicate_id_conflict" | "storage_error" | "overloaded";
