import { MAX_MEDIA_BYTES, MEDIA_LIMITS } from './store.ts';

/**
 * Limits on files users send (inbound media), the Cloud API's: a kind of message (`image`, `document`, ...)
 * carries only its own MIME types, each up to its size. Checked on the pointer's declared type and size before
 * anything is downloaded, and again on the decrypted file (the pointer is the sender's word, not a fact).
 */

/** AES-256-GCM's tag, appended to every attachment's ciphertext (see attachment.ts). */
export const ATTACHMENT_OVERHEAD_BYTES = 16;

/** The most ciphertext the router ever reads for one attachment: the largest allowed file, encrypted. */
export const MAX_ATTACHMENT_CIPHERTEXT_BYTES = MAX_MEDIA_BYTES + ATTACHMENT_OVERHEAD_BYTES;

/** Why an inbound file was refused: the Cloud API's code and a `details` naming the rule (never the content). */
export interface MediaRefusal {
  /** 131051: type not supported; 131052: the file could not be taken (too large, over the quota, broken). */
  code: 131051 | 131052;
  details: string;
}

/** The MIME types each kind of media message may carry. */
export const MEDIA_TYPES_BY_KIND: Readonly<Record<string, readonly string[]>> = Object.entries(MEDIA_LIMITS).reduce<Record<string, string[]>>(
  (acc, [type, { kind }]) => ((acc[kind] ??= []).push(type), acc),
  {},
);

/** A declared MIME type without parameters, lower-cased (`Image/PNG; x=y` → `image/png`). */
export function baseMimeType(mimeType: string): string {
  return mimeType.split(';')[0]!.trim().toLowerCase();
}

/**
 * The type to store and report: the base type, plus a `codecs` parameter when it is a plain token (WhatsApp's
 * voice notes are `audio/ogg; codecs=opus`); anything else the sender wrote is dropped, as it is later a header.
 */
export function storedMimeType(mimeType: string): string {
  const m = /^\s*[^;\s]+\s*;\s*codecs=([a-z0-9.+-]{1,32})\s*$/i.exec(mimeType);
  return m ? `${baseMimeType(mimeType)}; codecs=${m[1]!.toLowerCase()}` : baseMimeType(mimeType);
}

/** A sender-chosen string fit for a `details` text: printable ASCII, bounded. */
function shown(s: string): string {
  return JSON.stringify(s.replace(/[^\x20-\x7e]/g, '?').slice(0, 80));
}

/** The largest file a kind of media may carry with this MIME type, or null when the pair is not supported. */
export function inboundMaxBytes(kind: string, mimeType: string): number | null {
  const limit = MEDIA_LIMITS[baseMimeType(mimeType)];
  return limit && limit.kind === kind ? limit.max : null;
}

/**
 * Checks a user's file against the Cloud API's types and sizes: null when it may be taken, else the refusal
 * (131051 for a kind or type that is not supported, 131052 for a size over the kind's limit or an empty file).
 * `size` is the declared or the decrypted size; omit it to check only the type.
 */
export function checkInboundMedia(kind: string, mimeType: string, size?: number): MediaRefusal | null {
  const types = Object.hasOwn(MEDIA_TYPES_BY_KIND, kind) ? MEDIA_TYPES_BY_KIND[kind]! : null;
  if (!types) return { code: 131051, details: `media of kind ${shown(kind)} are not supported` };
  const max = inboundMaxBytes(kind, mimeType);
  if (max === null) {
    return { code: 131051, details: `${kind} files of type ${shown(baseMimeType(mimeType))} are not supported (supported: ${types.join(', ')})` };
  }
  if (size === undefined) return null;
  if (!Number.isSafeInteger(size) || size < 0) return { code: 131052, details: `the ${kind} file's size is not a valid number` };
  if (size === 0) return { code: 131052, details: `the ${kind} file is empty` };
  if (size > max) return { code: 131052, details: `${kind} files are at most ${max} bytes; this one has ${size}` };
  return null;
}
