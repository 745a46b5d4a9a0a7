// @backup-worker/client: the protocol (types, validation) and the Node backend's
// side. The browser's REST client is `@backup-worker/client/browser`.
export * from './protocol.js';
export * from './node.js';
