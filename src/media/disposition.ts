/**
 * `Content-Disposition: attachment` for a media download (RFC 6266), naming the file when its name is known: an
 * ASCII `filename` for old clients and the exact name as `filename*=UTF-8''…` (RFC 8187). The name comes from
 * whoever uploaded or sent the file, so only its last path segment is kept, without control characters, quotes
 * or backslashes, and bounded in length.
 */
export function contentDisposition(filename?: string): string {
  const name = safeFilename(filename ?? '');
  if (!name) return 'attachment';
  const ascii = name.replace(/[^\x20-\x7e]/g, '_').replace(/%/g, '_');
  // encodeURIComponent leaves !'()* as they are; RFC 8187's attr-char excludes ' ( ) *.
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/** The last path segment of a sender-chosen file name, without what could break a header or a path; '' if nothing is left. */
export function safeFilename(filename: string): string {
  const base = filename.split(/[/\\]/).pop() ?? '';
  // Code points, not UTF-16 units: the bound never splits a character.
  const cleaned = [...base.replace(/[\ud800-\udfff]/gu, '').normalize('NFC').replace(/[\u0000-\u001f\u007f-\u009f"\\\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '')].slice(0, 200).join('').trim();
  return cleaned.replace(/^\.+$/, '');
}
