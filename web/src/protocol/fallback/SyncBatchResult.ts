// PLACEHOLDER until ts-rs output is committed.
import type { BatchItemResult } from "./BatchItemResult";
export type SyncBatchResult = { type: "sync_batch_result", results: Array<BatchItemResult>, };
