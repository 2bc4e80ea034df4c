// PLACEHOLDER until ts-rs output is committed.
export type ErrorMessage = { type: "error", code: string, message: string, original_type?: string, };
