// PLACEHOLDER until ts-rs output is committed.
export type StatusMessage = { type: "status", status: string, protocol?: number, server_time?: string, message?: string, };
