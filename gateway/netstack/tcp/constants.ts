/**
 * TCP constants. Spec values first (named as the RFCs name them), then our own limits and defaults,
 * which are tuned for a userspace gateway proxying HTTP over WireGuard (MTU 1420).
 * Times are milliseconds; sizes are bytes.
 */

// ---- Spec values ----

/** RFC 9293 3.7.1: the MSS assumed when the peer sends no MSS option. */
export const DEFAULT_SEND_MSS = 536
/** IPv4 header without options (RFC 791) and TCP header without options (RFC 9293 3.1). */
export const IPV4_HEADER_LEN = 20
export const TCP_BASE_HEADER_LEN = 20
/** RFC 7323 3.2: NOP NOP + 10-byte timestamp option, carried on every segment once negotiated. */
export const TIMESTAMP_OPTION_SPACE = 12
/** RFC 7323 2.3: largest window scale shift. */
export const MAX_WINDOW_SHIFT = 14
/** RFC 7323 5.5: TS.Recent is invalid after 24 days of idle. */
export const PAWS_IDLE_LIMIT = 24 * 24 * 3600 * 1000
/** RFC 5681 3.2 / RFC 6675 2: duplicate ACKs (or SACKed segments) that signal a loss. */
export const DUP_THRESH = 3
/** RFC 6928: initial window of 10 segments. */
export const INITIAL_WINDOW_SEGMENTS = 10
/** RFC 6298 2.1: initial RTO of one second. */
export const INITIAL_RTO = 1000
/** RFC 6298 2.3: RTTVAR multiplier and clock granularity floor (our clock ticks in ms). */
export const RTO_K = 4
export const CLOCK_GRANULARITY = 1
/** RFC 6298 2.3: alpha = 1/8, beta = 1/4. */
export const RTT_ALPHA = 1 / 8
export const RTT_BETA = 1 / 4
/** RFC 9438 4.1 / 4.6: CUBIC constants. */
export const CUBIC_C = 0.4
export const CUBIC_BETA = 0.7
/** RFC 2018 3: SACK blocks that fit beside a timestamp option; four without one. */
export const MAX_SACK_BLOCKS_WITH_TS = 3
export const MAX_SACK_BLOCKS = 4
/** RFC 6056 / IANA: the dynamic port range used for ephemeral ports. */
export const EPHEMERAL_PORT_MIN = 49152
export const EPHEMERAL_PORT_MAX = 65535

// ---- Our limits and defaults (all overridable through TcpOptions) ----

/** WireGuard's default tunnel MTU; MSS = MTU - 40 = 1380. */
export const DEFAULT_MTU = 1420
/** Per-connection receive window ceiling: enough for 100 MB/s at 40 ms (bandwidth-delay product). */
export const DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024
/** Per-connection send buffer ceiling. */
export const DEFAULT_SEND_BUFFER = 4 * 1024 * 1024
/** What a connection may still buffer each way when the global limit is reached. */
export const DEFAULT_MIN_BUFFER = 64 * 1024
/** All connections together (send buffers + out-of-order data + unread data). */
export const DEFAULT_GLOBAL_BUFFER_LIMIT = 512 * 1024 * 1024
/** RTO bounds: 200 ms floor (as Linux and gVisor), 120 s ceiling (RFC 6298 2.5 allows a maximum >= 60 s). */
export const DEFAULT_MIN_RTO = 200
export const DEFAULT_MAX_RTO = 120_000
/** RFC 9293 3.8.6.3 / RFC 5681 4.2: delayed ACK at most 500 ms; we use 40 ms as Linux does. */
export const DEFAULT_DELAYED_ACK = 40
/** TIME-WAIT is short: the gateway is the client of its connections and picks fresh ports per peer. */
export const DEFAULT_TIME_WAIT = 1000
export const DEFAULT_FIN_WAIT_2_TIMEOUT = 30_000
export const DEFAULT_CLOSE_WAIT_TIMEOUT = 60_000
export const DEFAULT_LAST_ACK_TIMEOUT = 30_000
export const DEFAULT_SYN_RETRIES = 5
export const DEFAULT_SYN_ACK_RETRIES = 5
/** Retransmissions of the same data before giving up (Linux tcp_retries2 = 15). */
export const DEFAULT_MAX_RETRANSMITS = 15
/** RFC 5482 user timeout: unacknowledged data older than this aborts the connection. */
export const DEFAULT_USER_TIMEOUT = 60_000
/** Keepalive (RFC 9293 3.8.4, off unless enabled): idle time, probe interval, probes. */
export const DEFAULT_KEEPALIVE_IDLE = 60_000
export const DEFAULT_KEEPALIVE_INTERVAL = 10_000
export const DEFAULT_KEEPALIVE_PROBES = 6
/** Zero-window probes back off up to this interval. */
export const MAX_PERSIST_INTERVAL = 60_000
export const DEFAULT_MAX_CONNECTIONS = 65_536
export const DEFAULT_MAX_CONNECTIONS_PER_PEER = 4096
export const DEFAULT_MAX_HALF_OPEN = 1024
export const DEFAULT_MAX_TIME_WAIT = 16_384
/** Out-of-order segments held per connection (bytes are bounded by the window). */
export const DEFAULT_MAX_OUT_OF_ORDER_SEGMENTS = 4096
/** RFC 5961 10: challenge ACKs are rate limited; this is per connection per second. */
export const DEFAULT_CHALLENGE_ACKS_PER_SECOND = 10
/** RSTs sent for segments that match no connection, per second for the whole stack. */
export const DEFAULT_RSTS_PER_SECOND = 1000
/** Batched input: an ACK owed is sent at once, without waiting for the batch end, past this much data (GRO's 64 KiB). */
export const MAX_BATCHED_ACK_BYTES = 65536
/**
 * RFC 8985 7.2: the probe timeout is 2 SRTT, at least this, plus the worst-case delayed ACK when
 * one segment is out. RFC 8985's 10 ms floor is what Linux used before 4.13; it now adds 2 ticks
 * (2 ms) to 2 SRTT. On a sub-millisecond path 10 ms is 20 round trips lost to every tail ACK lost.
 */
export const TLP_MIN_TIMEOUT = 2
export const TLP_DELAYED_ACK = 200
/** Pacing: bursts of this many ms of the pacing rate (timers fire late by a millisecond or so), and at least this many segments, leave at once (at most DEFAULT_MAX_BURST). */
export const PACE_BURST_MS = 2
export const PACE_BURST_SEGMENTS = 10
/**
 * Data segments one connection sends back to back: at its pacing rate, and in one turn of the
 * event loop. A WireGuard peer such as wireguard-go reads the tunnel from a UDP socket with the
 * kernel's default 208 KiB buffer, ~90 of our datagrams: 32 leaves it two turns of ours to be
 * scheduled before anything drops, and one sendmmsg of 32 still spreads the system call's cost.
 * 16 dropped less still in a loaded lab (bench/RESULTS.md); 32 until a quiet run shows 16 costs
 * no upload throughput.
 */
export const DEFAULT_MAX_BURST = 32
/** Pacing: the SRTT floor of the rate. A 1 ms floor paced sub-millisecond paths (veth, LAN) below cwnd / SRTT. */
export const PACE_MIN_SRTT = 0.1
/** Retransmissions remembered per recovery for lost-retransmission detection; the oldest are forgotten (conservative: the RTO still finds those). */
export const MAX_RETRANSMIT_MARKS = 64
/** SACK scoreboard ranges kept per connection; more are dropped from the top (conservative). */
export const MAX_SCOREBOARD_RANGES = 256
