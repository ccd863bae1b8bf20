"""Every magic number of zipedge, with its unit and the reason it has that value.

Values an operator may want to change are *defaults* here and overridable through
`Settings`; the rest are fixed by a format or a protocol.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Bumped whenever the bytes of an archive for the same manifest would change (layout,
#: timestamps, extra fields). It is hashed into every archive id, so old cache objects are
#: simply never looked up again.
ARCHIVE_FORMAT_VERSION = 2

#: Length of an archive id in hex characters (128 bits of SHA-256): collision-free in
#: practice and short enough for URLs and object keys.
ARCHIVE_ID_HEX_CHARS = 32

# --- fetching -----------------------------------------------------------------------------

#: Objects fetched at once per stream. 200 KiB photos are latency-bound: at a 20 ms round
#: trip 1,000 of them stream in 0.87 s with 32 in flight against 1.51 s with 16 (make
#: bench, 2 cores); memory is bounded by the byte budget below, not by this.
DEFAULT_FETCH_CONCURRENCY = 32

#: Bytes a stream may hold in memory ahead of the writer (all prefetched objects together).
#: The object being written may go one read chunk past it so the writer can never starve.
DEFAULT_PREFETCH_BYTES = 32 * MiB

#: Size of one read from a source body. Large enough that per-chunk overhead (CRC call,
#: ASGI send) is negligible, small enough that a 5 GiB object never sits in memory.
READ_CHUNK_BYTES = 256 * KiB

#: What the entry the writer is on may hold regardless of the prefetch budget (bytes), so
#: the writer can never starve behind entries further ahead.
PREFETCH_HEAD_ALLOWANCE_BYTES = 2 * READ_CHUNK_BYTES

#: The archive writer joins records and the chunks already fetched until it holds this
#: much before it yields them (bytes): one send per ~256 KiB instead of three per photo
#: (each send passes the ASGI middleware and is a system call), for a copy of ~5 us per
#: 200 KiB. It never waits for more: what is pending goes out when the next chunk is not
#: here yet. So the writer holds less than this plus one chunk beside the budget.
WRITE_COALESCE_BYTES = READ_CHUNK_BYTES

#: glibc serves allocations from this size up from their own mappings (bytes; its default
#: starts at 128 KiB): a stream's chunks, records and joined sends are all below it, so
#: they come from the heap and reuse freed memory (service/malloc.py).
MALLOC_MMAP_THRESHOLD_BYTES = 16 * MiB

#: glibc gives the free top of its heap back to the kernel beyond this (bytes; default
#: 128 KiB): high enough that a stream's freed chunks stay for the next ones instead of
#: page-faulting back in, low enough that an idle process returns what a burst of
#: concurrent streams used.
MALLOC_TRIM_THRESHOLD_BYTES = 128 * MiB

#: Attempts to read one object (first try included) before a stream is aborted. A retry
#: resumes from the first byte not yet received (Range), never from zero.
FETCH_ATTEMPTS = 4

#: Backoff before retry n (seconds): BASE * 2**(n-1), capped. Short, because a user is
#: waiting with an open connection.
FETCH_BACKOFF_BASE_S = 0.2
FETCH_BACKOFF_MAX_S = 2.0

#: Day prefixes listed at once when resolving a date range.
LIST_CONCURRENCY = 16

#: Date-range manifests remembered per process: at most this many, holding at most this
#: many entries together (about 300 bytes each: ~60 MB at most).
MEMO_MAX_MANIFESTS = 64
MEMO_MAX_ENTRIES = 200_000

#: Objects stat'ed at once when a posted archive names keys or URLs without sizes.
STAT_CONCURRENCY = 16

#: Above this many entries a pass over them (a manifest's names, ids and layout: ~30 us an
#: entry; a posted body's checks; a day listing's CRC lookups: ~1 us) runs in a worker
#: thread (service/offloop.py), so a 200,000-entry selection cannot freeze the event loop
#: for seconds; below it the thread hop (~0.1 ms) would cost more than it saves.
MANIFEST_INLINE_ENTRIES = 2_000
#: Above this many bytes a stored manifest is encoded or decoded, or a request body
#: decoded, in a worker thread (~0.1 ms of CPU per 10 KiB: 256 KiB is a few ms).
MANIFEST_INLINE_JSON_BYTES = 256 * KiB
#: Large JSON arrays are encoded and decoded this many items per C call
#: (service/archive/jsonpieces.py): ~0.5 ms of GIL held each for manifest entries, where
#: one call over 200,000 of them held it ~100 ms. The arrays and objects of the first
#: `JSON_PIECES_DEPTH` levels are walked in Python, so a posted body
#: ({"entries": [{...}, ...]}) is decoded an entry at a time.
JSON_PIECE_ITEMS = 1_000
JSON_PIECES_DEPTH = 2
#: While a large manifest is built in a worker thread, the oldest generation's collection
#: threshold is this (collections of the middle one: in effect never) so that no full
#: collection, which holds the GIL for a pass over every object, stops the event loop
#: (service/offloop.py).
GC_HELD_OFF_THRESHOLD = 1 << 30
#: Worker threads for those passes (service/offloop.py). The GIL runs one at a time
#: anyway; each more thread wanting it is one more the loop may lose the GIL to when it
#: wakes (16 day listings of a 200,000-object range each had their passes in the default
#: pool's threads at once). Two, so that a small selection's pass need not wait behind
#: all of a large one's.
OFF_LOOP_THREADS = 2
#: The interpreter's switch interval in a serving process (seconds; Python's default is
#: 5 ms): how long the event loop, woken while a worker thread computes (a manifest, a
#: large body), may wait before that thread must hand the GIL over. At 5 ms every wake-up
#: of the loop during a build cost up to 5 ms; a shorter interval costs only more
#: hand-overs between threads that both want to compute, which the loop rarely does.
GIL_SWITCH_INTERVAL_S = 0.001

# --- HTTP origins ------------------------------------------------------------------------

#: Longest URL accepted in an archive entry (characters). Browsers and CDNs cap URLs near
#: 2 KiB (older IE: 2083); anything longer is not a photo link.
MAX_URL_CHARS = 2048

#: Timeouts for HTTP origins (seconds). Read is per read, not per object; the read timeout
#: is the default of ZIPEDGE_HTTP_TIMEOUT_S (an origin resizing on the fly may take seconds
#: for a first byte), and connecting never waits longer than the connect one.
HTTP_CONNECT_TIMEOUT_S = 5.0
HTTP_READ_TIMEOUT_S = 30.0

#: httpx collapses above ~32 concurrent connections (measured: ~300 objects/s at 32 against
#: ~1,000 at 1 on loopback), so the
#: origin client's pool stays below that whatever the fetch concurrency.
HTTP_MAX_CONNECTIONS = 24

#: Same-host redirects followed by an HTTP origin (Cloudinary answers a few).
HTTP_MAX_REDIRECTS = 3

# --- S3 --------------------------------------------------------------------------------

#: Extra pool connections above the fetch concurrency: listings, HEADs and the cache
#: writer must not queue behind object bodies.
S3_POOL_HEADROOM = 8

#: An idle keep-alive connection of the object GETs older than this is closed rather than
#: reused (seconds): S3 closes idle connections after about 20 s, and a request written
#: into a connection the server is closing fails (it is retried once, but costs a round
#: trip). aiohttp's default keep-alive, which the GETs used before.
HTTP1_KEEPALIVE_S = 15.0

#: Default connect and per-read timeout towards S3 (seconds): a hung S3 (a blackholed
#: network, a stuck gateway) fails a stream or /readyz this fast instead of hanging it.
DEFAULT_S3_TIMEOUT_S = 10

#: Keys per ListObjectsV2 page (the S3 maximum).
S3_LIST_PAGE = 1000

#: Attempts per S3 control-plane call inside botocore (first included). Few, because the
#: fetcher retries a read itself from the first missing byte, and a user waits meanwhile.
S3_MAX_ATTEMPTS = 2

# --- cache ------------------------------------------------------------------------------

#: Redirect URLs are signed at the start of a window of this many seconds, so every
#: request within it gets the byte-identical URL (one CDN cache entry per window).
DEFAULT_REDIRECT_WINDOW_S = 3600

#: A redirect URL stays valid at least this long after it is handed out (seconds).
DEFAULT_REDIRECT_MIN_VALIDITY_S = 3600

#: Presigned redirect URLs remembered (count): one per cached archive clicked in the
#: current window; a URL is about 0.5 KiB, so this is at most ~2 MiB.
PRESIGNED_URL_MEMO = 4096

#: How far (bytes) a cache write may fall behind its stream before it is dropped: the
#: client's download is never slowed by the cache.
TEE_MAX_LAG_BYTES = 24 * MiB

#: Background cache builds per process: streams whose client left and that go on
#: fetching only to finish the cache object. Beyond this the tee is aborted instead, so a
#: wave of abandoned downloads cannot keep fetching without bound.
DEFAULT_MAX_BUILDS = 4

#: Build lock lifetime without renewal (seconds): a crashed builder blocks its archive id
#: this long; renewed every third of it.
LOCK_TTL_S = 30

#: Smallest multipart part of a cache object (S3 needs 5 MiB; larger parts, fewer requests).
CACHE_MIN_PART_BYTES = 8 * MiB
#: S3's limit on the number of parts of one upload.
CACHE_MAX_PARTS = 10_000
#: Parts uploading at once per cache write: enough to hide one round trip, little memory.
CACHE_PARTS_IN_FLIGHT = 2
#: The same for a job's cache write, which no client waits on: a part is mostly one core's
#: work for the store, so parts in parallel use more of them (SeaweedFS took 1 GiB of 8 MiB
#: parts in 8.6 s with 4 in flight against 14.7 s with 2, medians of three alternating
#: runs on 2 cores). Memory: this many parts, plus the one being filled, per job.
JOB_PARTS_IN_FLIGHT = 4
#: How long a positive "it is cached" answer is remembered in process (seconds): a cache
#: object never disappears before its lifecycle rule, which is days.
CACHE_POSITIVE_MEMO_S = 300
#: Attempts to abort a multipart upload, with this backoff before the second (doubling):
#: an upload left behind costs storage until `zipedge janitor` or the lifecycle rule.
ABORT_ATTEMPTS = 3
ABORT_BACKOFF_S = 0.2
#: Cache-Control stored on cache objects: content-addressed, so never stale.
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
#: Bytes gathered before one write to a cache folder (one thread hop per write).
CACHE_FOLDER_WRITE_BYTES = 4 * MiB
#: Chunks queued between a build and its client: enough to smooth scheduling, small
#: enough that a slow client still slows the build (about 1 MiB).
BUILD_CLIENT_QUEUE_CHUNKS = 4
#: A 403 from the cache is logged at most once per this many seconds (it repeats on every
#: request until someone fixes the bucket policy).
CACHE_DENIED_LOG_INTERVAL_S = 60.0

# --- Redis -------------------------------------------------------------------------------

#: Connect and command timeout (seconds): a Redis outage must degrade a request (no
#: cache write, no shared listing), not hang it.
REDIS_SOCKET_TIMEOUT_S = 1.0

#: How long a posted archive stays downloadable after its last POST (seconds): a week is
#: long enough to share its link, short enough that abandoned manifests do not pile up.
DEFAULT_MANIFEST_TTL_S = 7 * 24 * 3600

#: Redis clients retry a command this many times on a dropped or timed-out connection
#: (a pooled connection that Redis closed when it restarted fails on first use).
REDIS_RETRIES = 1
#: Backoff before that retry (seconds): long enough for a restarted Redis to accept, short
#: enough that a Redis that is really down costs a request little more than its timeout.
REDIS_RETRY_BACKOFF_BASE_S = 0.05
REDIS_RETRY_BACKOFF_MAX_S = 0.5

#: How long the layout a live stream served is remembered (seconds): a download resumed
#: or fetched in parts within this gets the very bytes its first part came from.
SERVED_LAYOUT_TTL_S = 24 * 3600
#: How often a folder manifest store looks for served layouts past that lifetime (s).
SERVED_LAYOUT_PRUNE_S = 3600

#: Entries of served layouts a process keeps decoded for ranged answers (about 300 bytes
#: each): the parts of one download must not reload its manifest every time.
LAYOUTS_KEPT_ENTRIES = 200_000

# --- answers ---------------------------------------------------------------------------

#: `Retry-After` (seconds) when a dependency is down: long enough not to hammer it, short
#: enough that a person retrying by hand is not kept waiting.
RETRY_AFTER_UNAVAILABLE_S = 5

#: /readyz probes every dependency concurrently and answers within this (seconds), naming
#: the dependencies that did not answer in time.
READINESS_DEADLINE_S = 2.0

#: What uvicorn accepts before the app (`zipedge serve`): the largest request head h11
#: buffers (bytes; a 100 KB query is refused), connections and requests one process
#: serves at once (503 beyond: file descriptors and memory stay bounded whatever a flood
#: does), and how long an idle keep-alive connection is kept (seconds).
SERVER_MAX_HEADER_BYTES = 16 * KiB
SERVER_MAX_CONCURRENCY = 2048
SERVER_KEEP_ALIVE_S = 5
#: On SIGTERM, how long open requests (downloads) may go on before they are cut and the
#: process shuts down (seconds; every worker of `zipedge serve --workers N` alike).
SERVER_GRACEFUL_SHUTDOWN_S = 10
#: How often each serving process records its event loop's task count (seconds).
EVENT_LOOP_STATS_S = 1.0

# --- jobs --------------------------------------------------------------------------------

#: Defaults of the streaming limits: selections above them become background jobs.
#: A stream of 4 GiB at a modest 20 MB/s takes under 4 minutes; much beyond that, a job
#: (resumable download from the cache, survives proxies and restarts) serves people better.
DEFAULT_STREAM_MAX_BYTES = 4 * GiB
DEFAULT_STREAM_MAX_ENTRIES = 20_000

#: A running job reports progress (and so heartbeats) at most this often (seconds).
JOB_PROGRESS_INTERVAL_S = 1.0
#: A job whose archive someone else is building checks back this often (seconds).
JOB_LOCK_POLL_S = 2.0
#: A worker that has not heartbeated for this long is presumed dead (seconds); its job
#: is retried by the sweep. Several progress intervals, so a busy loop is not mistaken.
JOB_HEARTBEAT_S = 15
#: How often workers sweep for the jobs of dead workers (seconds).
JOB_SWEEP_S = 10
#: Attempts of one job (first included) for transient failures, with exponential backoff.
JOB_RETRIES = 3
JOB_RETRY_DELAY_S = 2
JOB_RETRY_MAX_DELAY_S = 60.0
#: A job's claim of its commit lasts this long (seconds): a worker killed mid-commit lets
#: its retry commit after it. A commit is one CompleteMultipartUpload: seconds at most.
JOB_GATE_COMMITTING_TTL_S = 120
#: How long a cancel waits for a commit under way to finish, and how often it looks (s).
JOB_CANCEL_WAIT_S = 30.0
JOB_CANCEL_POLL_S = 0.05
#: Finished jobs stay visible this long (seconds): a page reloaded the next day still
#: finds its download.
JOB_TTL_S = 24 * 3600
#: Jobs run at once by one worker process (or the in-process runner).
DEFAULT_WORKER_CONCURRENCY = 2
#: Jobs the in-process runner remembers at most (the oldest finished ones are forgotten).
LOCAL_MAX_JOBS = 1000
#: Jobs kept in the Redis index of recent jobs, and listed by GET /v1/jobs.
RECENT_JOBS_KEPT = 1000
RECENT_JOBS_LISTED = 50
#: How long a worker finishes its running jobs on SIGTERM before handing them back (s).
WORKER_SHUTDOWN_GRACE_S = 20
#: What an SSE client waits before reconnecting (milliseconds, the `retry:` field).
SSE_RETRY_MS = 2000
#: Server-Sent Events: how often the job state is polled, and the keep-alive ping
#: (well under nginx's proxy_read_timeout and Cloudflare's 100 s).
SSE_POLL_S = 0.5
SSE_PING_S = 15

# --- day listings ------------------------------------------------------------------------

#: Settled day, Redis tier (seconds). Changes made through the upload path bump the version,
#: so this only bounds how long a change that bypasses it (a lifecycle delete, a direct
#: write to the bucket) stays invisible, and how long Redis holds the blob.
LISTING_SETTLED_REDIS_TTL_S = 24 * 3600

#: Settled day, in-process tier (seconds). With Redis the version is re-read on every
#: request, so this only bounds memory held; without Redis it is also the staleness bound
#: for changes that bypass `bump`.
LISTING_SETTLED_LOCAL_TTL_S = 10 * 60

#: Live day (today, the margin after midnight, future days, or any day while Redis is
#: unreachable), both tiers (seconds). Short enough that a just-uploaded photo shows up at
#: once for a person; long enough that a burst of clicks costs one LIST.
LISTING_LIVE_TTL_S = 5

#: How long a process trusts the day versions it read before asking Redis again whether
#: anything was bumped (seconds). A bump made elsewhere is seen within this (a bump made
#: by this process, at once); repeat requests in between cost no Redis round trip, which
#: was half of a redirect's CPU. Well under LISTING_LIVE_TTL_S, the freshness of today.
LISTING_VERSION_CHECK_S = 0.25

#: How long one wait for a bump message lasts (seconds), under the Redis client's socket
#: timeout so an idle channel is not mistaken for a broken connection.
LISTING_BUMP_LISTEN_S = 0.5

#: A day counts as settled only this long after its UTC midnight: cameras upload late
#: (buffered while offline, skewed clocks), and those uploads may not all bump.
LISTING_LATE_UPLOAD_MARGIN_S = 3600

#: A version key lives this long after its last bump (seconds). It must outlast every
#: listing stored under an older version: if it expired first, the counter would restart
#: at 0 and could find a stale listing still stored under 0.
LISTING_VERSION_TTL_S = 7 * 24 * 3600

#: Whole date ranges a process keeps answers of (also bounded by objects, as the tier).
LISTING_RANGES_KEPT = 64

#: Days whose versions a process remembers between bumps (a year of days is 365); past
#: this the memory starts over.
LISTING_KNOWN_VERSIONS_MAX_DAYS = 10_000

#: Objects held by the in-process tier, all days together (about 310 bytes each in memory,
#: so roughly 80 MB). More than one archive's default maximum (200,000 entries).
LISTING_LOCAL_MAX_OBJECTS = 250_000

#: Longest wait for one Redis round trip (seconds), whatever the client's own timeouts and
#: retries: past it the request lists from the source instead. Generous because one MGET
#: may carry a year of blobs (a 10,000-object day is about 400 KB).
LISTING_REDIS_OP_TIMEOUT_S = 2.0

#: After a Redis error, Redis is skipped for this long (seconds), so an outage costs one
#: failed call per interval instead of a timeout on every request.
LISTING_REDIS_RETRY_AFTER_S = 5.0

#: A Redis outage is logged at most once per this many seconds.
LISTING_REDIS_LOG_INTERVAL_S = 60.0

#: zlib level of the Redis blobs: level 1 is three times faster than 6 on a 10,000-object
#: day (13 ms against 41 ms) for a blob only 7 % larger (random hex ETags dominate).
LISTING_ZLIB_LEVEL = 1

#: Blobs (compressed bytes, one batch together) above this are encoded or decoded in a
#: worker thread: a 10,000-object day costs about 25 ms of CPU, which must not stall every
#: stream on the event loop.
LISTING_INLINE_CODEC_BYTES = 64 * 1024

# --- object index ------------------------------------------------------------------------

#: A Redis index hash lives this long after its last write (seconds): a CRC costs a whole
#: read to learn and 16 bytes to keep.
INDEX_TTL_S = 400 * 24 * 3600
#: Longest wait for one index round trip to Redis (seconds); past it the CRCs count as
#: unknown (data descriptors) rather than holding a request.
INDEX_REDIS_OP_TIMEOUT_S = 1.0
#: Keys per SQLite `IN (...)` query (SQLite allows 32,766 host parameters; smaller
#: batches keep each query short).
INDEX_SQLITE_BATCH = 500
#: How long an SQLite write waits for another process's lock (milliseconds).
SQLITE_BUSY_MS = 5000

#: The source id under which the CRCs of URL entries are indexed (keyed by URL and ETag).
URL_SOURCE_ID = "http"

#: An adapter that keeps failing logs it at most once per this many seconds.
LOG_INTERVAL_S = 60.0

# --- limits --------------------------------------------------------------------------------

#: Longest date range accepted (days, both ends inclusive; ZIPEDGE_MAX_RANGE_DAYS).
DEFAULT_MAX_RANGE_DAYS = 366

#: Hard limits of one archive (413 beyond). 100k photos is the largest selection in the
#: brief; 1 TiB keeps a runaway selection from holding a connection for days.
DEFAULT_MAX_ENTRIES = 200_000
DEFAULT_MAX_BYTES = 1024 * GiB

#: Entries accepted in one POST /v1/archives body, and its size in bytes.
MAX_POSTED_ENTRIES = 100_000
MAX_POST_BODY_BYTES = 32 * MiB

#: Longest object key accepted (bytes, S3's limit) and longest member name (ZIP field).
MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 1024

#: JSON bodies nested deeper than this are refused (400) before the decoder recurses: a
#: posted archive is three levels deep ({"entries": [{...}]}).
MAX_JSON_DEPTH = 32

# --- identity, limits and quotas -----------------------------------------------------------

#: Validity window of signed links (seconds; ZIPEDGE_LINK_TTL_S). `expires` is rounded up
#: to the end of the next window, so a link is valid between one and two windows and
#: every request within one window gets the byte-identical link.
DEFAULT_LINK_TTL_S = 3600

#: Shortest HMAC key accepted (bytes): below 256 bits a secret can be brute-forced from one
#: token or link.
MIN_SECRET_BYTES = 32

#: Clock skew allowed between the token issuer and the service (seconds), for exp and nbf.
JWT_LEEWAY_S = 30

#: Verified tokens remembered per process (count), so a client's repeated requests cost a
#: dict lookup, not a signature check (RS256/ES256 cost ~0.1 ms of CPU each).
TOKEN_MEMO = 1024

#: Concurrent live streams and unfinished jobs one client may hold (429 beyond).
DEFAULT_MAX_STREAMS_PER_CLIENT = 4
DEFAULT_MAX_JOBS_PER_CLIENT = 10

#: Posted archives one client may keep stored at once, and their manifests' bytes together:
#: 100 archives of the 100,000-entry maximum would be ~500 MB of Redis per client.
DEFAULT_MAX_ARCHIVES_PER_CLIENT = 100
DEFAULT_MAX_ARCHIVE_BYTES_PER_CLIENT = 64 * MiB

#: Addresses whose X-Forwarded-For names the client (ZIPEDGE_TRUSTED_PROXIES): nginx on the
#: same host.
DEFAULT_TRUSTED_PROXIES = "127.0.0.1"

#: A live-stream slot held in Redis lives this long without renewal (seconds), so a process
#: that crashed gives its clients' slots back this fast; renewed every third of it.
STREAM_SLOT_TTL_S = 30

#: Retry-After for a client at its limit of concurrent streams or unfinished jobs (seconds):
#: no clock says when one of them ends, so this is a polite guess, not a promise.
RETRY_AFTER_BUSY_S = 10

#: Rate-limit leases (with Redis): a busy client's hits are taken from the shared window in
#: batches of as many as it used in the last interval, at most this fraction of its limit
#: and this many, and kept this long (seconds). A burst then costs one Redis call per batch
#: (a call is ~0.1 ms of CPU, a third of a redirect's); the hits a process took and did not
#: use within the interval are counted all the same, so a client may be limited a little
#: early, never late.
LIMITER_LEASE_FRACTION = 10
LIMITER_LEASE_MAX = 64
LIMITER_LEASE_S = 1.0

#: After the limiter's storage fails, requests pass unlimited for this long (seconds) rather
#: than each waiting for a Redis timeout; logged at most once per interval.
LIMITER_RETRY_AFTER_S = 5.0

#: A posted archive's distinct keys are looked up through their day's (cached) listing
#: instead of one HEAD each when a day holds at least this many of them: a listing page is
#: 1,000 keys for one request, a HEAD one key for one request.
POSTED_DAY_LISTING_MIN_KEYS = 16

# --- ZIP format ----------------------------------------------------------------------------

#: Fields of 32 bits in the classic ZIP records; a value at or above it needs Zip64.
ZIP32_LIMIT = 0xFFFFFFFF
#: Entry count above which the end record needs Zip64.
ZIP16_LIMIT = 0xFFFF
#: Central records are emitted in blocks of about this many bytes rather than one tiny
#: chunk each, so a 100k-entry directory is a few hundred sends, not 100k.
ZIP_DIRECTORY_BLOCK_BYTES = 64 * KiB
#: Earliest and latest instants a DOS date can hold.
DOS_EPOCH_YEAR = 1980
DOS_LAST_YEAR = 2107

# --- uploads ---------------------------------------------------------------------------

#: Largest photo accepted by POST /v1/uploads (bytes; ZIPEDGE_UPLOAD_MAX_BYTES). A camera
#: JPEG is a few MiB; 50 MiB leaves room for HEIC bursts and panoramas.
DEFAULT_UPLOAD_MAX_BYTES = 50 * MiB
#: Content types accepted (ZIPEDGE_UPLOAD_TYPES), and the extension a file name without
#: one gets, so that a bare plate number still opens as a picture.
DEFAULT_UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic")
UPLOAD_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/heic": ".heic"}
#: Validity of an upload URL (seconds; ZIPEDGE_UPLOAD_TTL_S): long enough for 50 MiB over
#: a slow uplink, short enough that a leaked URL is soon worthless.
DEFAULT_UPLOAD_TTL_S = 900
#: Age after which a pending upload counts as abandoned (seconds; ZIPEDGE_UPLOAD_GRACE_S).
DEFAULT_UPLOAD_GRACE_S = 24 * 3600
#: Random bytes of an upload id (hex in URLs and keys): unguessable.
UPLOAD_ID_BYTES = 16
#: How far in the future `taken_at` may lie (seconds): camera clocks drift, but not by days.
UPLOAD_MAX_FUTURE_S = 24 * 3600
#: A complete holds its upload this long (seconds) while it verifies, copies and records;
#: a second complete meanwhile waits for its answer instead of copying again.
UPLOAD_COMPLETE_LEASE_S = 60
#: How long a racing complete waits for the one holding the lease (seconds), polling.
UPLOAD_COMPLETE_WAIT_S = 30.0
UPLOAD_COMPLETE_POLL_S = 0.05
#: Records outlive the grace period by this much in Redis (seconds), so a record the
#: janitor never reached (no janitor running) still disappears by itself.
UPLOAD_RECORD_SLACK_S = 24 * 3600
#: Bytes gathered before one write to the staging folder (one thread hop per write).
UPLOAD_FOLDER_WRITE_BYTES = 1 * MiB
#: How often the worker (or, without Redis, the service) runs the janitor (seconds).
JANITOR_INTERVAL_S = 300
#: Records the janitor claims per round trip.
JANITOR_BATCH = 100
#: A multipart upload under the cache prefix older than this many build-lock lifetimes
#: belongs to a build that died (a live build renews its lock every third of one).
STALE_MULTIPART_LOCK_TTLS = 4

# --- listing freshness -------------------------------------------------------------------

#: Longest a change made behind zipedge's back may stay invisible in a day's listing
#: (seconds; ZIPEDGE_LISTING_MAX_STALE_S), settled days included.
DEFAULT_LISTING_MAX_STALE_S = 300
#: A settled day is re-listed in the background once its cached listing is this far
#: through its life, so requests keep hitting the cache while it is re-validated.
LISTING_REFRESH_AT_FRACTION = 0.5
