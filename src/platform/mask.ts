import { maskPhone } from '../log.ts';

/**
 * Masks every phone-number-like run of digits inside free text (libsignal error messages name addresses,
 * which here are phone numbers), so such text can go into logs.
 * @example maskNumbers('session with 15551234567.1 not found') // 'session with 15*******67.1 not found'
 */
export function maskNumbers(text: string): string {
  return text.replace(/\d{7,15}/g, (d) => maskPhone(d));
}
