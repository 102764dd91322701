/** Free-text masking of phone numbers, shared with the router (src/log.ts). */
export { maskNumbers } from '../log.ts';
