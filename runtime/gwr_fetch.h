/*
** gwr_fetch.h — the worker's HTTP client: libcurl multi driven by the
** worker's libevent loop (curl's hiperfifo pattern), for backend calls and
** proxy routes.
**
** One GwrFetch per worker thread, bound to that worker's event_base; nothing
** here is thread-safe and nothing takes a lock. Connections are kept alive and
** pooled in the multi handle's connection cache, DNS answers are cached there
** too, and easy handles are recycled through a free list.
**
** Not here: building URLs, choosing headers, parsing bodies, the failure
** policy, hop-by-hop header filtering. The caller does those; this file moves
** bytes and reports how a transfer ended.
**
** Callback rules. Every callback runs on the worker's loop, never
** synchronously inside gwr_fetch_start(). A callback may start new transfers
** and may cancel any transfer, its own included. After gwr_fetch_cancel(x) no
** callback of x runs again; after gwr_fetch_free(f) no callback of any of f's
** transfers runs. on_done runs exactly once for every transfer that was
** started (gwr_fetch_start returned non-NULL) and not cancelled; the
** transfer handle is invalid once on_done returns. gwr_fetch_free() must not
** be called from inside one of these callbacks.
*/
#ifndef GWR_FETCH_H
#define GWR_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

/* Settings for one worker's client. Zero in a field means its default, so a
** zeroed struct (or NULL) gives the defaults. */
typedef struct GwrFetchConfig {
  long   max_connections;       /* open connections in total (0: unlimited);
                                   beyond it transfers wait for a free one */
  long   max_host_connections;  /* per host:port (0: unlimited) */
  long   max_idle_connections;  /* connection cache size (default 256) */
  long   idle_timeout_s;        /* a pooled connection idle longer than this
                                   is not reused (default 30) */
  long   dns_cache_timeout_s;   /* default 60; -1 caches forever */
  long   connect_timeout_ms;    /* when a request leaves it 0 (default 5000) */
  long   timeout_ms;            /* when a request leaves it 0 (default 30000) */
  size_t max_response;          /* when a request leaves it 0 (default 16 MiB) */
  size_t max_header_bytes;      /* response head, all lines (default 64 KiB) */
  size_t max_headers;           /* response header fields (default 200) */
  long   max_idle_handles;      /* easy handles kept for reuse (default 256) */
  const char *ca_file;          /* borrowed; NULL: the system's CA store */
  int    insecure;              /* 1: do not verify TLS peers (tests only) */
} GwrFetchConfig;

/* How a transfer ended (the kind passed to on_done). */
enum {
  GWR_FETCH_OK,         /* a complete response was received (any status) */
  GWR_FETCH_CONNECT,    /* could not resolve, connect or handshake */
  GWR_FETCH_TIMEOUT,    /* the connect or total timeout expired */
  GWR_FETCH_TOO_LARGE,  /* body beyond max_response, or head beyond limits */
  GWR_FETCH_ABORTED,    /* a callback returned -1 (or read returned
                           GWR_FETCH_READ_ABORT) */
  GWR_FETCH_CANCELLED,  /* never passed to on_done; for logs of the caller */
  GWR_FETCH_ERROR       /* other transport errors: reset, truncated body,
                           malformed response */
};

/* "ok", "connect", "timeout", "too_large", "aborted", "cancelled", "error";
** "unknown" for anything else. A static string. */
const char *gwr_fetch_kind_name(int kind);

/* Returned by on_data to pause receiving, and by read to pause sending.
** Larger than any buffer libcurl hands out, so never a byte count. */
#define GWR_FETCH_PAUSE      0x10000001
/* Returned by read to abort the transfer (kind GWR_FETCH_ABORTED). */
#define GWR_FETCH_READ_ABORT 0x10000002

/* One response header field. name and value point into the transfer's head
** buffer, are NUL-terminated, and are valid only during on_head. The value
** has surrounding whitespace removed; obs-folded lines are joined with one
** space. Fields come in the order received, repeats kept. */
typedef struct GwrFetchHeader {
  const char *name;  size_t name_len;
  const char *value; size_t value_len;
} GwrFetchHeader;

/* TLS of a backend (`backend { tls { … } }`), for https:// URLs. Zeroed:
** the system's CA store (or the config's ca_file), no client certificate,
** peer and host name verified. Every transfer needs TLS 1.2 at least. */
typedef struct GwrFetchTls {
  const char *ca;                  /* CA bundle (PEM) instead of the system's */
  const char *cert, *key;          /* client certificate and key (mutual TLS) */
  int no_verify;                   /* 1: accept any certificate and name */
} GwrFetchTls;

typedef struct GwrFetchReq {
  const char *url;                 /* full http:// or https:// URL */
  const char *method;              /* "GET", "POST", ...; NULL: GET (or POST
                                      when there is a body) */
  const char *const *headers;      /* "Name: value", NULL-terminated, or NULL.
                                      libcurl adds only Host (unless given),
                                      Content-Length / Transfer-Encoding for a
                                      body; no Accept, no Expect, no default
                                      Content-Type. */
  const char *body; size_t body_len;  /* request body (copied), or NULL */
  /* Or a streamed request body (proxy): read() fills up to cap bytes and
  ** returns the count, 0 at the end, GWR_FETCH_PAUSE to pause until
  ** gwr_fetch_resume_send(), or GWR_FETCH_READ_ABORT. Used when body is NULL. */
  size_t (*read)(void *ud, char *buf, size_t cap);
  int64_t body_size;               /* streamed: size if known, -1: chunked */
  long connect_timeout_ms;         /* per attempt; 0: the config's */
  long timeout_ms;                 /* whole transfer; 0: the config's */
  size_t max_response;             /* body bytes; 0: the config's. Checked
                                      against Content-Length before on_head,
                                      and while receiving. */
  const GwrFetchTls *tls;          /* borrowed, read during gwr_fetch_start;
                                      NULL: the defaults */
  /* Callbacks, all optional. */
  /* Once, when the final status and headers are in (1xx responses are
  ** skipped); the status line is not among h. Return 0, or -1 to abort. */
  int  (*on_head)(void *ud, long status, const GwrFetchHeader *h, size_t nh);
  /* Body bytes, in order. Return 0 (all consumed), -1 to abort, or
  ** GWR_FETCH_PAUSE: the n bytes are NOT consumed, receiving stops, and after
  ** gwr_fetch_resume_recv() they are delivered again (perhaps with more). */
  int  (*on_data)(void *ud, const char *p, size_t n);
  /* Exactly once unless cancelled. status is the final HTTP status or 0 if
  ** none was received; detail is a short message for logs and error bodies
  ** ("" when kind is OK), valid during the call. */
  void (*on_done)(void *ud, int kind, long status, const char *detail);
  void *ud;
} GwrFetchReq;

typedef struct GwrFetch GwrFetch;
typedef struct GwrFetchXfer GwrFetchXfer;

/* Initializes libcurl once per process (idempotent, thread-safe). Call it
** from main before workers start; gwr_fetch_new() calls it too. */
void gwr_fetch_global_init(void);
/* Releases libcurl's global state; only after every GwrFetch is freed and no
** thread uses libcurl any more (at exit, for leak checkers). */
void gwr_fetch_global_cleanup(void);

/* A client on base (borrowed; it must outlive the client). cfg is copied;
** NULL means defaults. Returns an owned client, or NULL when libcurl or
** libevent cannot be set up. */
GwrFetch *gwr_fetch_new(struct event_base *base, const GwrFetchConfig *cfg);
/* Cancels every transfer still running (no callbacks), closes the pooled
** connections, frees everything. NULL is allowed. Not from a callback. */
void gwr_fetch_free(GwrFetch *f);

/* Starts a transfer. Copies the URL, method, headers and body; the caller's
** request may be freed when this returns (read and ud are kept). Returns a
** handle borrowed from f (valid until on_done returns or cancel), or NULL on
** immediate failure (bad URL, no memory): then on_done is NOT called. */
GwrFetchXfer *gwr_fetch_start(GwrFetch *f, const GwrFetchReq *r);
/* Stops a transfer: no callback of it runs afterwards, its connection is
** closed if it was mid-response. Safe from inside any callback, its own
** included (the real cleanup is deferred). NULL, or a transfer inside its
** own on_done, is a no-op. */
void gwr_fetch_cancel(GwrFetchXfer *x);
/* Resume receiving after on_data returned GWR_FETCH_PAUSE, or sending after
** read returned GWR_FETCH_PAUSE. Take effect on the next loop turn; calling
** either when not paused is a no-op. Safe from callbacks. */
void gwr_fetch_resume_recv(GwrFetchXfer *x);
void gwr_fetch_resume_send(GwrFetchXfer *x);

/* During x's on_done: whether the request may have reached the server (a
** connection was up and sending had begun). 0 means it surely did not: the
** connection failed or timed out first, so any method may be sent again. */
int  gwr_fetch_sent(const GwrFetchXfer *x);

/* Counters for metrics and tests. */
typedef struct GwrFetchStats {
  uint64_t started, ok, failed, cancelled;
  long running;          /* started, not yet ended */
  long idle_handles;     /* easy handles on the free list */
} GwrFetchStats;
void gwr_fetch_stats(const GwrFetch *f, GwrFetchStats *out);

#endif
