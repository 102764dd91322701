import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';

const VERSION = 'v1';

/** Raised when a sealed value cannot be opened (wrong key, tampered bytes, or a value moved to another key). */
export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

/** AES-256-GCM with the key name as associated data: a sealed value cannot be moved to another key. */
export function seal(key: Buffer, plaintext: Uint8Array | string, aad: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([c.update(typeof plaintext === 'string' ? Buffer.from(plaintext) : plaintext), c.final()]);
  return `${VERSION}.${Buffer.concat([iv, ct, c.getAuthTag()]).toString('base64')}`;
}

/** Opens a value made by {@link seal}; throws {@link SealError} on any mismatch. */
export function open(key: Buffer, sealed: string, aad: string): Buffer {
  const dot = sealed.indexOf('.');
  if (dot < 0 || sealed.slice(0, dot) !== VERSION) throw new SealError('unknown sealed format');
  const raw = Buffer.from(sealed.slice(dot + 1), 'base64');
  if (raw.length < 28) throw new SealError('sealed value too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
  } catch {
    throw new SealError('sealed value failed authentication');
  }
}

/**
 * Per-business data keys wrapped by the master key (envelope encryption). Data keys are cached unwrapped
 * in memory only; Redis holds them wrapped.
 */
export class DataKeys {
  private readonly cache = new Map<string, Buffer>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly masterKey: Buffer,
  ) {}

  /** Creates and stores a new data key for a business (idempotent: keeps an existing one). */
  async create(businessId: string): Promise<Buffer> {
    const dk = randomBytes(32);
    const name = this.keys.dataKey(businessId);
    const ok = await this.redis.set(name, seal(this.masterKey, dk, name), 'NX');
    if (ok) {
      this.cache.set(businessId, dk);
      return dk;
    }
    return this.get(businessId);
  }

  /** The business's unwrapped data key. */
  async get(businessId: string): Promise<Buffer> {
    const hit = this.cache.get(businessId);
    if (hit) return hit;
    const name = this.keys.dataKey(businessId);
    const wrapped = await this.redis.get(name);
    if (!wrapped) throw new SealError(`no data key for business ${businessId}`);
    const dk = open(this.masterKey, wrapped, name);
    this.cache.set(businessId, dk);
    return dk;
  }

  /** A keyed hash under the business's data key: stable opaque ids that reveal nothing without the key. */
  async mac(businessId: string, input: string): Promise<Buffer> {
    return createHmac('sha256', await this.get(businessId)).update(input).digest();
  }
}

/** {@link open}, as the `Uint8Array<ArrayBuffer>` libsignal's deserializers take. */
export function openBytes(key: Buffer, sealed: string, aad: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(open(key, sealed, aad));
}
