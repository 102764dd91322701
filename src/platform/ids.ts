import { randomBytes } from 'node:crypto';

/**
 * A new message id in the Cloud API's shape: `wamid.` and an opaque URL-safe token.
 * @example newWamid() // 'wamid.pP3yF4r2bW9Qk1oZ8m0c4xT7'
 */
export function newWamid(): string {
  return `wamid.${randomBytes(18).toString('base64url')}`;
}
