/**
 * Exit statuses of `cloud-connect agent` (documented in its --help and the README). A supervisor
 * should restart the agent only on EXIT_FAILURE: the others need a person (a new token, another
 * setting, privileges) before a restart can help.
 */
/** Stopped on SIGTERM/SIGINT after telling the API (disconnect); `test`: every check passed. */
export const EXIT_OK = 0
/** Unexpected failure; `test`: at least one check failed. */
export const EXIT_FAILURE = 1
/** Bad flags or settings (no token, bad URL, a token file unreadable or open to group/others). */
export const EXIT_USAGE = 2
/** The API rejected the instance token (regenerated, instance deleted, mistyped): state `error`. */
export const EXIT_TOKEN_REJECTED = 3
/**
 * The API refused the tunnel for good: not a Cloud Connect API, an answer over the size limit, or a
 * tunnel configuration that fails a check (nothing of it is written).
 */
export const EXIT_REFUSED = 4
/** Kernel mode cannot work here: WireGuard tools missing or no NET_ADMIN. */
export const EXIT_KERNEL_UNAVAILABLE = 5
/**
 * Kernel mode, UDP blocked: no handshake over UDP within CC_AGENT_TLS_FALLBACK_AFTER while the
 * gateway's HTTPS port answers. wg-quick speaks UDP only; userspace mode carries the tunnel over TLS.
 */
export const EXIT_UDP_BLOCKED = 6

export const EXIT_CODES_HELP = `Exit status:
  0  stopped by SIGTERM/SIGINT (the API was told: disconnect); test: every check passed
  1  unexpected failure; test: a check failed
  2  bad flags or settings (no token, bad URL, a token file unreadable or open to group/others)
  3  the API rejected the instance token (regenerated or instance deleted): state error, no retry
  4  the API refused the tunnel for good (wrong API URL, oversized answer, a tunnel_config field
     that fails its check: nothing is written)
  5  kernel mode unavailable (WireGuard tools missing, no NET_ADMIN)
  6  kernel mode: UDP to the gateway seems blocked (no handshake within --tls-fallback-after while
     its HTTPS port answers); wg-quick speaks UDP only: use --mode userspace (WireGuard over TLS)`
