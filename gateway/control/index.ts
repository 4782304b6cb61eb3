/**
 * Control-plane adapters for the gateway, behind proto/rpc's ControlPlane interface:
 *
 *   HttpControlPlane     a remote `cloud-connect control` (--control URL --secret S)
 *   StaticControlPlane   the --config FILE peers (SIGHUP publishes a new version)
 *   (in-process)         control's own RpcService, wired by cli/ for `cloud-connect start`
 *
 * ControlClient keeps the Gateway in step with any of them (watch, apply, persist, hello,
 * reports); planSnapshot turns a snapshot into WireGuard peers and edge routes; SnapshotStore keeps
 * the last snapshot on disk for restarts while control is down.
 */
export { ControlClient, initialSnapshot, type ControlTarget, type ControlClientOptions, type BackoffOptions } from './client.ts'
export { HttpControlPlane, type HttpControlPlaneOptions } from './http-client.ts'
export { StaticControlPlane, snapshotFromConfig } from './static-file.ts'
export { SnapshotStore } from './store.ts'
export { ReportBuilder } from './reporter.ts'
export { planSnapshot, type Route, type SnapshotPlan, type RejectedPeer } from './apply.ts'
