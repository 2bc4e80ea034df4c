// PLACEHOLDER until ts-rs output is committed.
import type { NackReason } from "./NackReason";
export type BatchItemResult = { id: string, status: string, seq?: number, applied?: boolean, duplicate: boolean, updated_at?: string, reason?: NackReason, detail?: string, };
