// PLACEHOLDER until ts-rs output is committed (shape of finwise-protocol's `Operation`).
export type Operation = "create" | "update" | "delete";
