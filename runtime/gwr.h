/*
** gwr.h — gwd's internal interface: the loaded program with its runtime
** tables, the server settings, workers, connections and exchanges.
**
** How a request flows (one worker thread, one event_base):
**
**   accept (gwr_server.c) → bytes → strict HTTP parser (gwr_http.c)
**     → path normalization → router (gwr_router.c)
**     → auth → limit → cache   (gwr_exchange.c: policy hooks)
**     → call plan: start every call whose inputs exist (gwr_fetch.c, libcurl
**       multi on the worker's loop), bodies parsed as they stream in keeping
**       only the paths read (gwr_json.c), values in the request arena
**     → guards, response expressions (gwr_vm.c) → JSON written by yajl_gen
**       into the connection's output buffer.
**
** The program (GwrProg) is immutable and refcounted: every exchange holds a
** reference, so a reload can swap it while requests finish on the old one.
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

/* ---- the loaded program ----------------------------------------------------- */

typedef struct GwrBackend {
  char      **urls;        /* resolved base URLs (env() applied), no trailing '/' */
  int         nurls;
  unsigned    rr;          /* round-robin position (atomic) */
  const char **headers;    /* "Name: value" from the backend's headers { }, NULL-terminated */
} GwrBackend;

typedef struct GwrApiKey { const char *client; unsigned char sha[32]; } GwrApiKey;
typedef struct GwrAuthRt {
  GwrApiKey  *keys; int nkeys;   /* API keys from the keys file */
  const char *header;            /* `from header`: the name lower-cased, as the parser keeps names */
} GwrAuthRt;

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

typedef struct GwrSettings {
  const char   *listen[GWR_MAX_LISTEN];
  int           nlisten;
  const char   *admin;
  int           workers;
  GwrHttpLimits http;
  uint32_t      header_timeout_ms, body_timeout_ms, idle_timeout_ms, drain_ms;
  uint32_t      max_connections;
  int           max_json_depth;
  uint32_t      limit_keys;        /* keys the local rate-limit store keeps at most */
  const char   *redis;             /* redis://host:port for store redis */
  uint32_t      redis_timeout_ms;
} GwrSettings;

/* Defaults, then the program's server { } block, then flags (the caller). */
void gwr_settings_defaults(GwrSettings *s);
void gwr_settings_from_program(GwrSettings *s, const GwProgram *p);

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
  GwrConn            *conns;       /* open connections, for draining and shutdown */
  uint32_t           *inflight;    /* calls in flight per backend of prog (the queue cap) */
  GwrRedis           *redis;       /* this worker's connection for store redis, or NULL */
  time_t              date_at;     /* the second date[] shows */
  char                date[32];    /* the Date header's value (IMF-fixdate), once a second */
  GwrProg            *prog;        /* this worker's reference to the current program:
                                      read without a lock on the hot path; a reload
                                      will swap it from an event on this worker's loop */
};

struct GwrServer {
  GwrSettings  set;
  GwrProg     *prog;               /* the program loaded at start (each worker holds a reference) */
  GwrLimiter  *limiter;            /* local rate-limit buckets, shared by the workers */
  GwrWorker   *workers;
  int          nworkers;
  int          nconns;             /* atomic */
  volatile int stopping;
};

/* Bind every listener (SO_REUSEPORT, one per worker) and start the workers.
** Returns 0, or -1 with a message in err (a port in use, …). */
int  gwr_server_start(GwrServer *s, char *err, size_t errlen);
/* Stop accepting, let in-flight requests finish up to the drain deadline, join. */
void gwr_server_stop(GwrServer *s);
/* A retained reference to the program, for a request on worker w. */
GwrProg *gwr_worker_prog(GwrWorker *w);

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
  int                 streaming;   /* the request body goes to the exchange as it arrives */
  int                 body_full;   /* ...and its queue is full: stop parsing until gwr_conn_more_body */
  int                 resp_started;/* a streamed response head went out */
  size_t              lingered;    /* bytes dropped while closing */
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
/* The client went away or the connection is being torn down. */
void gwr_exchange_abort(GwrExchange *ex);
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

/* Logging: one JSON line on stderr. */
void gwr_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
