// Work-around for the generated OutgoingClientMessage.ts, which names `EntityType` (from a
// `#[ts(type = "Array<EntityType> | null")]` override) without importing it. Remove once the
// generator emits the import; a module-level import then takes precedence anyway.
type EntityType = import('./generated/EntityType').EntityType
