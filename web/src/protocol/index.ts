/**
 * Protocol v2 types. The canonical declarations are generated from the Rust crate
 * `finwise-protocol` by ts-rs into `./generated/` (never edit those by hand); this module
 * re-exports them under one import path for the rest of the client. Until the generated files are
 * committed, `./fallback/` holds hand-written stand-ins with the same shapes.
 */
export type { SyncQueueEntry } from './fallback/SyncQueueEntry'
export type { Operation } from './fallback/Operation'
export type { EntityType } from './fallback/EntityType'
export type { SyncAck } from './fallback/SyncAck'
export type { SyncNack } from './fallback/SyncNack'
export type { NackReason } from './fallback/NackReason'
export type { DataUpdate } from './fallback/DataUpdate'
export type { InitialDataLoad } from './fallback/InitialDataLoad'
export type { SyncBatchResult } from './fallback/SyncBatchResult'
export type { BatchItemResult } from './fallback/BatchItemResult'
export type { DataStatusResponse } from './fallback/DataStatusResponse'
export type { StatusMessage } from './fallback/StatusMessage'
export type { ErrorMessage } from './fallback/ErrorMessage'
export type { OutgoingClientMessage } from './fallback/OutgoingClientMessage'

/** NACK reasons a client retries automatically (see `NackReason::retryable` in Rust). */
export const RETRYABLE_REASONS: readonly string[] = ['storage_error', 'overloaded']
