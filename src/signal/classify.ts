import { ErrorCode, LibSignalErrorBase } from '@signalapp/libsignal-client';

/**
 * What went wrong in a libsignal call, in the router's terms. libsignal reports most protocol failures as
 * `ErrorCode.Generic` and tells them apart only by message text; this is the one place that reads that
 * text, pinned to @signalapp/libsignal-client 0.103 by test/signal/classify.test.ts.
 */
export type SignalFailure =
  | 'duplicate'          // the message was decrypted before: acknowledge, do not reset
  | 'no_session'         // no (or an expired) session for the address
  | 'untrusted_identity' // the peer's identity key changed
  | 'invalid_message'    // MAC failure, corrupted ciphertext, counter jump too far, old chain
  | 'missing_prekey'     // the PreKey message names a prekey this side no longer has
  | 'replayed_prekey'    // a last-resort prekey used again with the same base key
  | 'bad_signature'      // a bundle whose signatures do not verify
  | 'malformed'          // bytes that are not a Signal message at all
  | 'other';

/** Classifies an error thrown by a libsignal call. */
export function classifySignalError(err: unknown): SignalFailure {
  if (!(err instanceof LibSignalErrorBase)) return 'other';
  switch (err.code) {
    case ErrorCode.DuplicatedMessage:
      return 'duplicate';
    case ErrorCode.UntrustedIdentity:
      return 'untrusted_identity';
    case ErrorCode.InvalidSession:
      return 'no_session';
    default:
      break;
  }
  const m = err.message;
  if (/^session with .* not found/.test(m)) return 'no_session';
  if (m.includes("'markKyberPreKeyUsed'")) return 'replayed_prekey';
  if (/error in method call '(loadKyberPreKey|loadPreKey|loadSignedPreKey)'/.test(m)) return 'missing_prekey';
  if (m.startsWith('invalid signature detected')) return 'bad_signature';
  if (m.startsWith('invalid Whisper message') || m.startsWith('invalid PreKey message') || m.startsWith('invalid message')) return 'invalid_message';
  if (m.startsWith('ciphertext serialized bytes were too short') || m.startsWith('ciphertext version was') || m.includes('protobuf')) return 'malformed';
  return 'other';
}
