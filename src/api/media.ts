import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { contentDisposition } from '../media/disposition.ts';
import { MAX_MEDIA_BYTES, MEDIA_LIMITS, MediaQuotaError, type MediaInfo, type MediaStore } from '../media/store.ts';
import type { BusinessStore } from '../store/businesses.ts';
import { AuthError, GraphError, InvalidParameterError, UnknownObjectError } from '../runtime/graph-errors.ts';
import { parseOr100 } from '../runtime/message-schemas.ts';
import { MediaUploadFields } from './schemas/business.ts';

/** 131053: the upload could not be taken (kind, type or size outside what the Cloud API accepts). */
export class MediaUploadError extends GraphError {
  constructor(details: string) {
    super(131053, 'Media upload error', details, 400);
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** The Cloud API's media object: where to download it (with the same token), its type, hash and size. */
export function mediaInfo(req: FastifyRequest, m: MediaInfo): Record<string, unknown> {
  const base = `${req.protocol}://${req.host}`;
  return { messaging_product: 'whatsapp', url: `${base}/media/download/${m.id}`, mime_type: m.mimeType, sha256: m.sha256, file_size: m.fileSize, id: m.id };
}

/** `DELETE /{media_id}` (app.ts registers the route: the same path deletes a group). */
export async function deleteMedia(store: MediaStore, req: FastifyRequest): Promise<{ success: true }> {
  if (!req.media) throw new UnknownObjectError(String((req.params as { phone_number_id: string }).phone_number_id).slice(0, 40), 'DELETE');
  await store.delete(req.media.businessId, req.media.id);
  return { success: true };
}

/**
 * Media routes, as the Cloud API has them: `POST /{phone_number_id}/media` (multipart/form-data: `file`,
 * `type`, `messaging_product=whatsapp`) answers `{"id"}`; `GET /{media_id}` answers the media object (its
 * `url` downloads the bytes with the same bearer token); `DELETE /{media_id}` deletes it. Files are sealed at
 * rest and expire with the business's retention.
 */
export function registerMedia(
  app: FastifyInstance,
  media: { store: MediaStore; retentionOf(businessId: string): Promise<number> },
  auth: { onRequest: onRequestHookHandler | ((req: FastifyRequest) => Promise<void>) },
  businesses: BusinessStore,
): void {
  void app.register(multipart, { limits: { fileSize: MAX_MEDIA_BYTES, files: 1, fields: 10, fieldSize: 1024, parts: 12 } });

  const upload = async (req: FastifyRequest) => {
    const pn = req.phoneNumber!;
    if (!req.isMultipart()) throw new InvalidParameterError('media upload must be multipart/form-data with a file part');
    const fields: Record<string, string> = {};
    let file: { bytes: Buffer; mimeType: string; filename: string } | null = null;
    for await (const part of req.parts()) {
      if (part.type === 'file') {
        if (file) throw new InvalidParameterError('one file per upload');
        const bytes = await part.toBuffer();
        if (part.file.truncated) throw new MediaUploadError(`file is larger than ${MAX_MEDIA_BYTES} bytes`);
        file = { bytes, mimeType: part.mimetype, filename: part.filename };
      } else fields[part.fieldname] = String(part.value);
    }
    const form = parseOr100(MediaUploadFields, fields);
    if (!file) throw new InvalidParameterError('the file part is missing');
    const mimeType = (form.type ?? file.mimeType).split(';')[0]!.trim().toLowerCase();
    const limit = MEDIA_LIMITS[mimeType];
    if (!limit) throw new MediaUploadError(`type ${mimeType.slice(0, 80)} is not supported (supported: ${Object.keys(MEDIA_LIMITS).join(', ')})`);
    if (file.bytes.length > limit.max) throw new MediaUploadError(`${limit.kind} files are at most ${limit.max} bytes; this one has ${file.bytes.length}`);
    if (!file.bytes.length) throw new MediaUploadError('the file is empty');
    const ttl = await media.retentionOf(pn.business_id);
    try {
      const stored = await media.store.put(pn.business_id, pn.phone_number_id, file.bytes, mimeType, ttl, file.filename || undefined);
      return { id: stored.id };
    } catch (e) {
      if (e instanceof MediaQuotaError) throw new MediaUploadError(`${e.message}; delete media (DELETE /{media_id}) or wait for them to expire`);
      throw e;
    }
  };
  app.post('/:version/:phone_number_id/media', auth, upload);
  app.post('/:phone_number_id/media', auth, upload);


  // The download URL the media object gives: the bytes, for the owning business's token only.
  app.get('/media/download/:media_id', async (req: FastifyRequest, reply: FastifyReply) => {
    const m = BEARER.exec(req.headers.authorization ?? '');
    if (!m) throw new AuthError('An active access token must be used to query information about the current user.');
    const businessId = await businesses.authenticate(m[1]!);
    if (!businessId) throw new AuthError();
    const id = (req.params as { media_id: string }).media_id;
    const info = await media.store.info(businessId, id);
    const bytes = info ? await media.store.bytes(businessId, id) : null;
    if (!info || !bytes) throw new UnknownObjectError(id.slice(0, 40), 'GET');
    // A download is a file to save, never a page to render: no sniffing a type other than the stored one, no
    // inline display (a user's file must not run as the API's origin), and no scripts should a browser try.
    return reply.type(info.mimeType).header('cache-control', 'private, no-store')
      .header('x-content-type-options', 'nosniff')
      .header('content-disposition', contentDisposition(info.filename))
      .header('content-security-policy', "default-src 'none'; sandbox")
      .send(bytes);
  });
}
