/*
** gwr.h — gwd's internal interface: the loaded program with its runtime
** tables, the server settings, workers, connections and exchanges.
**
** How a request flows (one worker thread, one event_base):
**
**   accept (gwr_server.c; TLS: gwr_tls.c) → bytes → strict HTTP parser
**     (gwr_http.c) → path normalization → router (gwr_router.c)
**     → auth (gwr_jwt.c) → limit (gwr_limit.c) → response cache
**       (gwr_cache.c)   (gwr_exchange.c: policy hooks)
**     → call plan: start every call whose inputs exist — a connection slot,
**       a target, the breaker (gwr_backend.c), then libcurl multi on the
**       worker's loop (gwr_fetch.c) — bodies parsed as they stream in keeping
**       only the paths read (gwr_json.c), values in the request arena
**     → guards, response expressions (gwr_vm.c) → JSON written by yajl_gen
**       into the connection's output buffer, one writev (gwr_server.c)
**     → metrics and the access-log line (gwr_metrics.c, gwr_accesslog.c).
**
** The program (GwrProg) is immutable and refcounted: every exchange holds a
** reference, so a reload (gwr_server_reload) can swap it while requests
** finish on the old one.
*/
#ifndef GWR_H
#define GWR_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include "gw_bytecode.h"
#include "gwr_value.h"
#include "gwr_http.h"
#include "gwr_router.h"
#include "gwr_json.h"
#include "gwr_fetch.h"
#include "gwr_vm.h"
#include "gwr_jwt.h"
#include "gwr_limit.h"
#include "gwr_tls.h"
#include "gwr_backend.h"

/* ---- the loaded program ----------------------------------------------------- */

typedef struct GwrBackend {
  char      **urls;        /* resolved base URLs (env() applied), no trailing '/' */
  int         nurls;
  const char **headers;    /* "Name: value" from the backend's headers { }, NULL-terminated */
  GwrFetchTls tls;         /* tls { ca cert key verify } (paths checked at load) */
  struct GwrBe *be;        /* target selection, health, breaker, connection slots
                              (gwr_backend.h); owned, fresh at every load */
} GwrBackend;

typedef struct GwrApiKey { const char *client; unsigned char sha[32]; } GwrApiKey;
typedef struct GwrAuthRt {
  GwrApiKey  *keys; int nkeys;   /* API keys from the keys file */
  const char *header;            /* `from header`: the name lower-cased, as the parser keeps names */
} GwrAuthRt;

typedef struct GwrText { const char *p; uint32_t n; } GwrText;

typedef struct GwrProg {
  GwProgram  *p;
  GwArena     arena;       /* everything below lives here */
  GwrRouter  *router;
  GwValue   **envs;        /* per env reference */
  GwValue    *consts;      /* per constant: its value (the VM's CONST) */
  GwrPaths  **paths;       /* per call (global index) */
  GwrBackend *backends;
  GwrAuthRt  *auths;       /* per auth policy: API keys loaded from keys files */
  GwrJwt    **jwts;        /* per auth policy: the JWT verifier (NULL for API keys) */
  int         uses_redis;  /* some limit has store redis */
  GwrTls    **tls;         /* per listener of the program's server { }: its TLS
                              contexts (built at load), NULL for a plain one */
  GwrTls    **listen_tls;  /* per listener served (GwrSettings order, GWR_MAX_LISTEN):
                              the contexts new connections get; gwr_prog_listen_tls */
  uint16_t   *ep_slot;     /* per endpoint: its metrics slot (gwr_metrics.h) */
  uint16_t   *be_slot;     /* per backend */
  uint16_t   *auth_slot;   /* per auth policy */
  uint16_t   *limit_slot;  /* per limit */
  const char **mask_names; /* query parameters the access log masks: every `from query` name */
  int         nmask;
  GwrText    *alog_route;  /* per endpoint: its pattern as a JSON string, for the access log */
  GwrText    *alog_call;   /* per call: {"name":…,"backend":…,"status":  (a proxy endpoint:
                              per endpoint, alog_proxy) */
  GwrText    *alog_proxy;
  int         refcount;
  char        source[256]; /* what was loaded, for logs */
} GwrProg;

/* Load PATH (.gwb, .gw or a directory), verify, resolve env(), build the
** router and extraction paths. NULL with a message in err on failure
** (diagnostics of a .gw compile go to diag). */
GwrProg *gwr_prog_load(const char *path, FILE *diag, char *err, size_t errlen);
void     gwr_prog_retain(GwrProg *g);
void     gwr_prog_release(GwrProg *g);
/* The Redis URL of the program (a literal or a resolved env()), or NULL. */
const char *gwr_prog_redis(const GwrProg *g);
/* Whether sha is the SHA-256 of a key of auth policy a; *client = its name. */
int      gwr_apikey_lookup(const GwrProg *g, uint32_t a, const unsigned char sha[32], const char **client);

/* ---- settings ------------------------------------------------------------------ */

#define GWR_MAX_LISTEN 16
#define GWR_MAX_WORKERS 64
#define GWR_MAX_TLS_PAIRS 16

/* Whether a listener serves TLS, and with what. A listener of the program
** (from_cli 0) takes its certificates from the program's `listen ADDR tls { }`
** of the same address, in whichever program is loaded (so a reload re-reads
** them); a command-line one (--listen-tls) names its pairs here, and a
** reload re-reads those files. */
typedef struct GwrListenTls {
  int         on;                  /* serves HTTPS; fixed at start */
  int         from_cli;            /* --listen / --listen-tls */
  int         npairs;              /* command line: the --tls-cert/--tls-key pairs */
  GwrTlsPair  pairs[GWR_MAX_TLS_PAIRS];
} GwrListenTls;

typedef struct GwrSettings {
  const char   *listen[GWR_MAX_LISTEN];
  GwrListenTls  tls[GWR_MAX_LISTEN];  /* per listen[] */
  int           nlisten;
  const char   *admin;
  int           workers;
  GwrHttpLimits http;
  uint32_t      header_timeout_ms, body_timeout_ms, idle_timeout_ms, drain_ms;
  uint32_t      max_connections;
  int           max_json_depth;
  uint32_t      limit_keys;        /* keys the local rate-limit store keeps at most */
  size_t        cache_size;        /* bytes of the response cache (gwr_cache.h); 0: off */
  const char   *redis;             /* redis://host:port for store redis */
  uint32_t      redis_timeout_ms;
  int           access_log_fd;     /* where the access log goes (borrowed; default 1, stdout); -1: off */
} GwrSettings;

/* Defaults, then the program's server { } block, then flags (the caller). */
void gwr_settings_defaults(GwrSettings *s);
void gwr_settings_from_program(GwrSettings *s, const GwProgram *p);
/* The TLS contexts of the listeners s serves, into g->listen_tls: a listener
** of the program gets the contexts g built at load for the same address, a
** command-line one gets contexts built now from its files. A listener never
** changes between plain and TLS after start: a program that no longer has
** `tls` for a TLS listener (or adds it to a plain one) is an error. Call it
** after gwr_prog_load and before g serves anything: at start, and for every
** reload before the swap (a failure refuses the reload). 0, or -1 with a
** message naming the listener or the file in err. */
int  gwr_prog_listen_tls(GwrProg *g, const GwrSettings *s, char *err, size_t errlen);

/* ---- server -------------------------------------------------------------------- */

typedef struct GwrServer GwrServer;
typedef struct GwrWorker GwrWorker;
typedef struct GwrConn GwrConn;
typedef struct GwrExchange GwrExchange;

struct GwrWorker {
  GwrServer          *srv;
  int                 id;
  pthread_t           thread;
  struct event_base  *base;
  GwrFetch           *fetch;
  struct evconnlistener *ls[GWR_MAX_LISTEN + 1];
  int                 nls;
  struct event       *stop_ev;
  struct event       *resume_ev;   /* accepting again after running out of descriptors */
  struct event       *swap_ev;     /* a reload: take up srv->prog */
  GwrConn            *conns;       /* open connections, for draining and shutdown */
  GwrRedis           *redis;       /* this worker's connection for store redis, or NULL */
  time_t              date_at;     /* the second date[] shows */
  char                date[32];    /* the Date header's value (IMF-fixdate), once a second */
  uint64_t            tls_handshake_failures;  /* TLS handshakes that failed (atomic: read
                                      by metrics); a client that leaves silently is not one */
  time_t              tls_logged_at;  /* the last line about them (one a minute at most) */
  struct GwrMetrics  *metrics;     /* this worker's counters (gwr_metrics.h) */
  struct GwrAlog     *alog;        /* this worker's access-log buffer (gwr_accesslog.h); NULL: off */
  GwrProg            *prog;        /* this worker's reference to the current program:
                                      read without a lock on the hot path; a reload
                                      will swap it from an event on this worker's loop */
};

struct GwrServer {
  GwrSettings  set;
  GwrProg     *prog;               /* the current program (each worker holds a reference to
                                      the one it serves; a reload replaces it, under prog_mu) */
  GwrProg     *boot;               /* the program loaded at start: set's strings point into it */
  const char  *program_path;       /* what a reload loads again */
  pthread_mutex_t prog_mu;         /* guards prog, generation and the reload counters */
  pthread_mutex_t reload_mu;       /* one reload at a time */
  uint64_t     generation;         /* 1 at start, +1 per successful reload */
  uint64_t     reloads_ok, reloads_failed;
  GwrLimiter  *limiter;            /* local rate-limit buckets, shared by the workers */
  struct GwrCache *cache;          /* the response and call cache, shared by the workers; NULL: off */
  GwrWorker   *workers;
  int          nworkers;
  int          nconns;             /* atomic */
  volatile int stopping;
  struct GwrHealth *health;        /* the active health checks' thread (gwr_backend.h) */
};

/* Bind every listener (SO_REUSEPORT, one per worker) and start the workers.
** Returns 0, or -1 with a message in err (a port in use, …). */
int  gwr_server_start(GwrServer *s, char *err, size_t errlen);
/* Stop accepting, let in-flight requests finish up to the drain deadline, join. */
void gwr_server_stop(GwrServer *s);
/* A retained reference to the program, for a request on worker w. */
GwrProg *gwr_worker_prog(GwrWorker *w);
/* Load s->program_path again, verify it and swap it in atomically: each
** worker takes it up on its own loop, requests in flight finish on the
** program they started with. A program that fails to load is refused and
** the current one keeps serving. Returns 0, or -1; msg gets a one-line
** result (the diagnostics of a refused program are logged). Safe from any
** thread; reloads are serialized. Server settings (listeners, workers,
** timeouts) stay as they were at start. */
int      gwr_server_reload(GwrServer *s, char *msg, size_t msglen);

/* ---- connections (gwr_server.c) and exchanges (gwr_exchange.c) ------------------- */

struct GwrConn {
  GwrWorker          *w;
  struct bufferevent *bev;
  GwrHttpParser       parser;
  int                 state;       /* CONN_* in gwr_server.c */
  struct event       *timer;
  char                peer[64];    /* the TCP peer address, never a client-supplied one */
  GwrExchange        *ex;          /* the request being handled */
  GwBuf               body;        /* the request body so far */
  int                 keep_alive;
  int                 closing;
  int                 paused_by;   /* an exchange waiting for the output to drain */
  int                 admin;       /* an admin listener connection */
  int                 tls;         /* came in on a TLS listener (bev is an SSL bufferevent) */
  GwrTls             *tls_ref;     /* the contexts its SSL came from, held while it lives */
  int                 streaming;   /* the request body goes to the exchange as it arrives */
  int                 body_full;   /* ...and its queue is full: stop parsing until gwr_conn_more_body */
  int                 resp_started;/* a streamed response head went out */
  size_t              lingered;    /* bytes dropped while closing */
  uint64_t            t0_us;       /* the request's first byte (gwr_now_us), for its duration */
  int                 resp_status; /* the status of the response queued (or whose head went out) */
  uint64_t            resp_bytes;  /* its bytes queued so far, head and body */
  struct event       *kick;        /* resume parsing a streamed body */
  struct event       *flush;       /* write the queued output, once the current event is handled */
  GwrConn            *prev, *next;
};

/* A complete request arrived on c: handle it (gwr_exchange.c). */
void gwr_exchange_start(GwrConn *c);
/* The head of a request with a body arrived: if it is for a proxy route,
** start forwarding now and return 1 (the body then streams through
** gwr_exchange_body/_end); else return 0 (the body is read whole first). */
int  gwr_exchange_head(GwrConn *c);
/* A piece of a streamed request body (copied); returns the bytes queued. */
size_t gwr_exchange_body(GwrExchange *ex, const char *p, size_t n);
void gwr_exchange_body_end(GwrExchange *ex);
/* The queue of a streamed body has room again: parse more of it. */
void gwr_conn_more_body(GwrConn *c);
/* The request failed under the exchange (an error answer follows from the
** connection), or the connection is being torn down: stop it. */
void gwr_exchange_abort(GwrExchange *ex);
/* The client went away (the connection is freed): the request ends as 499
** (or with the status a streamed response began with), then is aborted. */
void gwr_exchange_gone(GwrExchange *ex);
/* The response to c's current request was queued (gwr_conn_respond, or the
** end of a streamed one): count it and write its access-log line. c->ex is
** the exchange that answered, or NULL when the connection layer refused the
** request itself. */
void gwr_exchange_answered(GwrConn *c);
/* The connection's output drained (proxy backpressure). */
void gwr_exchange_drained(GwrExchange *ex);

/* Queue a complete response on c. extra: preformatted "Name: value\r\n"
** lines (may be NULL); body may be NULL (taken: its bytes are moved);
** head_only: HEAD (headers as for the body, no body). After the output
** drains the connection reads the next request or closes. */
void gwr_conn_respond(GwrConn *c, int status, const char *extra, struct evbuffer *body, int head_only);
/* A gateway error: {"error": msg, "status": status}. */
void gwr_conn_error(GwrConn *c, int status, const char *msg, const char *extra);
/* Streaming (proxy): write the head now, then body pieces, then end. */
void gwr_conn_stream_head(GwrConn *c, int status, const char *headers, int chunked);
void gwr_conn_stream_data(GwrConn *c, const char *p, size_t n, int chunked);
void gwr_conn_stream_end(GwrConn *c, int chunked, int ok);
size_t gwr_conn_pending_output(GwrConn *c);
const char *gwr_status_text(int status);

/* Logging: one JSON line on stderr. level: "debug", "info", "warn" or
** "error"; lines below the level set by gwr_log_set_level (default info)
** are dropped. */
void gwr_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The least level logged, by name. 0, or -1 for an unknown name. Before
** the workers start. */
int  gwr_log_set_level(const char *name);

#endif
