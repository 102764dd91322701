import { pino, type Logger } from 'pino';
import { logTraceFields, tracingOn } from './ops/tracing.ts';

/**
 * Masks a phone number or wa_id for logs: keeps the country-code-ish first two and the last two digits.
 * @example maskPhone('+15551234567') // '15*******67'
 */
export function maskPhone(phone: string | undefined | null): string {
  if (!phone) return '';
  const digits = String(phone).replace(/\D/g, '');
  if (digits.length <= 4) return '*'.repeat(digits.length);
  return digits.slice(0, 2) + '*'.repeat(digits.length - 4) + digits.slice(-2);
}

/** Field names whose values are never logged (message content, secrets). */
const REDACT = [
  'text', 'body', 'plaintext', 'payload.text', 'payload.body', '*.text', '*.body',
  'access_token', 'app_secret', 'authorization', 'req.headers.authorization', 'token', 'secret',
];

let destination: pino.DestinationStream | undefined;
let defaultLevel = 'info';

/**
 * Sets the level and destination of every logger created afterwards (the config calls it once at start;
 * tests point the destination at a capture stream to scan log lines for canaries).
 */
export function configureLogging(opts: { level?: string; destination?: pino.DestinationStream }): void {
  if (opts.level) defaultLevel = opts.level;
  destination = opts.destination;
}

/**
 * Creates the structured logger for one component. Content fields are redacted by name. While tracing is on
 * (started before the process makes its loggers), a line written inside a span carries `trace_id` and `span_id`.
 */
export function createLogger(component: string, level = defaultLevel): Logger {
  const opts = { name: component, level, redact: { paths: REDACT, censor: '[redacted]' }, ...(tracingOn() ? { mixin: logTraceFields } : {}) };
  return destination ? pino(opts, destination) : pino(opts);
}

/**
 * Masks every phone-number-like run of digits inside free text (libsignal error messages name addresses,
 * which here are phone numbers), so such text can go into logs.
 * @example maskNumbers('session with 15551234567.1 not found') // 'session with 15*******67.1 not found'
 */
export function maskNumbers(text: string): string {
  return text.replace(/\d{7,15}/g, (d) => maskPhone(d));
}
