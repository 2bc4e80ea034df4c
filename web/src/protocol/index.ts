/**
 * Protocol v2 types. The canonical declarations are generated from the Rust crate
 * `finwise-protocol` by ts-rs into `./generated/` (never edit those by hand); this module
 * re-exports them under one import path for the rest of the client
 * (regenerate: `FINWISE_UPDATE_TS=1 cargo test -p finwise-protocol --test typescript`).
 */
export type { SyncQueueEntry } from './generated/SyncQueueEntry'
export type { Operation } from './generated/Operation'
export type { EntityType } from './generated/EntityType'
export type { SyncAck } from './generated/SyncAck'
export type { SyncNack } from './generated/SyncNack'
export type { NackReason } from './generated/NackReason'
export type { DataUpdate } from './generated/DataUpdate'
export type { InitialDataLoad } from './generated/InitialDataLoad'
export type { SyncBatchResult } from './generated/SyncBatchResult'
export type { BatchItemResult } from './generated/BatchItemResult'
export type { DataStatusResponse } from './generated/DataStatusResponse'
export type { StatusMessage } from './generated/StatusMessage'
export type { ErrorMessage } from './generated/ErrorMessage'
export type { ErrorCode } from './generated/ErrorCode'
export type { Heartbeat } from './generated/Heartbeat'
export type { ServerMessage } from './generated/ServerMessage'
export type { OutgoingClientMessage } from './generated/OutgoingClientMessage'

/** NACK reasons a client retries automatically, generated from `NackReason::retryable`. */
export { RETRYABLE_REASONS } from './generated/registry'
