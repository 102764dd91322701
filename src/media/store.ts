import { createHash, randomInt } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from '../store/keys.ts';
import { openBinary, sealBinary, type DataKeys } from '../store/sealer.ts';
import { MediaQuota } from './quota.ts';

export { MediaQuotaError } from './quota.ts';

/** What the Cloud API accepts per kind of media: MIME types and the largest file. */
export const MEDIA_LIMITS: Record<string, { kind: string; max: number }> = {
  'audio/aac': { kind: 'audio', max: 16 << 20 }, 'audio/amr': { kind: 'audio', max: 16 << 20 }, 'audio/mpeg': { kind: 'audio', max: 16 << 20 },
  'audio/mp4': { kind: 'audio', max: 16 << 20 }, 'audio/ogg': { kind: 'audio', max: 16 << 20 },
  'image/jpeg': { kind: 'image', max: 5 << 20 }, 'image/png': { kind: 'image', max: 5 << 20 },
  'image/webp': { kind: 'sticker', max: 500 << 10 },
  'video/mp4': { kind: 'video', max: 16 << 20 }, 'video/3gpp': { kind: 'video', max: 16 << 20 },
  'text/plain': { kind: 'document', max: 100 << 20 }, 'application/pdf': { kind: 'document', max: 100 << 20 },
  'application/msword': { kind: 'document', max: 100 << 20 }, 'application/vnd.ms-excel': { kind: 'document', max: 100 << 20 },
  'application/vnd.ms-powerpoint': { kind: 'document', max: 100 << 20 },
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document': { kind: 'document', max: 100 << 20 },
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet': { kind: 'document', max: 100 << 20 },
  'application/vnd.openxmlformats-officedocument.presentationml.presentation': { kind: 'document', max: 100 << 20 },
};

/** The largest file any kind allows (the upload stream stops there). */
export const MAX_MEDIA_BYTES = 100 << 20;

export interface MediaInfo {
  id: string;
  businessId: string;
  phoneNumberId: string;
  mimeType: string;
  /** Base64 SHA-256 of the bytes (as the Cloud API reports it). */
  sha256: string;
  fileSize: number;
  filename?: string;
}

/**
 * Uploaded and received media: the bytes sealed with the business's data key (AES-256-GCM, bound to the
 * key), in one Redis hash per media id, expiring with the business's retention (at most 30 days) like the
 * messages that may carry it. Only the owning business's tokens reach a media id. The files of one business
 * together take at most `quotaBytes` (see quota.ts).
 */
export class MediaStore {
  private readonly quota: MediaQuota;

  constructor(
    private readonly storeOf: (businessId: string) => Promise<Redis>,
    private readonly shared: Redis,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
    opts: { quotaBytes: number },
  ) {
    this.quota = new MediaQuota(keys, opts.quotaBytes);
  }

  /** Stores a file for `ttlMs`; throws {@link MediaQuotaError} (storing nothing) when it would exceed the business's quota. */
  async put(businessId: string, phoneNumberId: string, bytes: Buffer, mimeType: string, ttlMs: number, filename?: string): Promise<MediaInfo> {
    const id = `${randomInt(1, 10)}${Array.from({ length: 15 }, () => randomInt(0, 10)).join('')}`;
    const key = this.keys.media(id);
    const dk = await this.dataKeys.get(businessId);
    const info: MediaInfo = {
      id, businessId, phoneNumberId, mimeType, sha256: createHash('sha256').update(bytes).digest('base64'), fileSize: bytes.length,
      ...(filename ? { filename } : {}),
    };
    const redis = await this.storeOf(businessId);
    // One expiry instant for the file and its quota entry, so the bytes stop counting when they are gone.
    const expiresAt = Date.now() + ttlMs;
    await this.quota.reserve(redis, businessId, id, bytes.length, expiresAt);
    try {
      // The owner is routing data (in the shared store); the bytes live with the business's other data.
      await redis.multi()
        .hset(key, { m: mimeType, s: info.sha256, n: String(bytes.length), p: phoneNumberId, ...(filename ? { f: sealBinary(dk, Buffer.from(filename), `${key}:f`) } : {}), d: sealBinary(dk, bytes, `${key}:d`) })
        .pexpireat(key, expiresAt)
        .exec();
      await this.shared.set(this.keys.mediaOwner(id), businessId, 'PX', ttlMs);
    } catch (e) {
      await Promise.allSettled([redis.del(key), this.quota.release(redis, businessId, [id])]);
      throw e;
    }
    return info;
  }

  /** The bytes the business's stored media take, as its quota counts them. */
  async usage(businessId: string): Promise<{ usedBytes: number; quotaBytes: number }> {
    return { usedBytes: await this.quota.used(await this.storeOf(businessId), businessId), quotaBytes: this.quota.quotaBytes };
  }

  /** The media's details when `businessId` owns it, else null (unknown and foreign ids look the same). */
  async info(businessId: string, id: string): Promise<MediaInfo | null> {
    if (!/^\d{1,20}$/.test(id)) return null;
    if ((await this.shared.get(this.keys.mediaOwner(id))) !== businessId) return null;
    const key = this.keys.media(id);
    const row = await (await this.storeOf(businessId)).hmgetBuffer(key, 'm', 's', 'n', 'p', 'f');
    if (!row[0]) return null;
    const dk = await this.dataKeys.get(businessId);
    return {
      id, businessId, mimeType: row[0].toString(), sha256: row[1]!.toString(), fileSize: Number(row[2]!.toString()), phoneNumberId: row[3]?.toString() ?? '',
      ...(row[4] ? { filename: openBinary(dk, row[4], `${key}:f`).toString() } : {}),
    };
  }

  /** The media's bytes when `businessId` owns it. */
  async bytes(businessId: string, id: string): Promise<Buffer | null> {
    if (!(await this.info(businessId, id))) return null;
    const key = this.keys.media(id);
    const sealed = await (await this.storeOf(businessId)).hgetBuffer(key, 'd');
    return sealed ? openBinary(await this.dataKeys.get(businessId), sealed, `${key}:d`) : null;
  }

  /** Deletes media by id without an ownership check (the caller's conversation received them). */
  async deleteIds(businessId: string, ids: string[]): Promise<void> {
    const redis = await this.storeOf(businessId);
    await Promise.all(ids.flatMap((id) => [redis.del(this.keys.media(id)), this.shared.del(this.keys.mediaOwner(id))]));
    // Released after the bytes are gone: an interruption between the two over-counts, never under-counts.
    await this.quota.release(redis, businessId, ids);
  }

  /** Deletes a media id the business owns (false when it does not), releasing its bytes from the quota. */
  async delete(businessId: string, id: string): Promise<boolean> {
    if (!(await this.info(businessId, id))) return false;
    await this.deleteIds(businessId, [id]);
    return true;
  }
}
