/**
 * How fast a killed worker's jobs come back: a lock that is not renewed for 15 s marks the job stalled (checked
 * every 5 s) and it runs elsewhere. Stalling is never fatal: a conversation must not stop because workers died.
 */
export const RECOVERY = { lockDuration: 15_000, stalledInterval: 5_000, maxStalledCount: 1_000_000 } as const;
