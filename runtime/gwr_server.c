/*
** gwr_server.c — listeners, workers and connections.
**
** A connection is a small state machine driven by one function, drive():
**
**   IDLE ──first byte──▶ HEAD ──head parsed──▶ BODY ──message done──▶ BUSY
**     ▲                                                                 │
**     └──────── output drained, keep-alive ◀── WRITING ◀── response ────┘
**
** One request is handled at a time per connection; pipelined requests wait
** in the input buffer and are parsed once the previous response is queued,
** so responses leave in order. Deadlines are absolute per phase (a head
** must arrive within header_timeout however slowly it trickles in, a body
** within body_timeout), which stops slowloris; an idle keep-alive
** connection closes after idle_timeout. Every error answer is JSON.
**
** A TLS listener's connection is the same machine over an SSL bufferevent
** (libevent's bufferevent_openssl, accepting): the handshake runs before
** the first byte reaches on_read, bounded by the same first deadline; the
** output is written by the bufferevent (never by evbuffer_write on the
** socket); a close after a response sends close_notify first.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <event2/thread.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "gwr.h"
#include "gwr_metrics.h"
#include "gwr_accesslog.h"

enum { CONN_IDLE, CONN_HEAD, CONN_BODY, CONN_BUSY, CONN_WRITING, CONN_LINGER };

const char *gwr_status_text(int s) {
  switch (s) {
  case 100: return "Continue";
  case 200: return "OK"; case 201: return "Created"; case 202: return "Accepted";
  case 204: return "No Content"; case 206: return "Partial Content";
  case 301: return "Moved Permanently"; case 302: return "Found"; case 304: return "Not Modified";
  case 400: return "Bad Request"; case 401: return "Unauthorized"; case 403: return "Forbidden";
  case 404: return "Not Found"; case 405: return "Method Not Allowed"; case 408: return "Request Timeout";
  case 409: return "Conflict"; case 410: return "Gone"; case 413: return "Content Too Large";
  case 414: return "URI Too Long"; case 415: return "Unsupported Media Type"; case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests"; case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error"; case 501: return "Not Implemented"; case 502: return "Bad Gateway";
  case 503: return "Service Unavailable"; case 504: return "Gateway Timeout"; case 505: return "HTTP Version Not Supported";
  default: return s < 200 ? "Informational" : s < 300 ? "OK" : s < 400 ? "Redirect" : s < 500 ? "Client Error" : "Server Error";
  }
}

static void conn_free(GwrConn *c) {
  if (!c) return;
  if (c->ex) { GwrExchange *ex = c->ex; c->ex = NULL; gwr_exchange_gone(ex); }
  if (c->prev) c->prev->next = c->next; else c->w->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->timer) event_free(c->timer);
  if (c->kick) event_free(c->kick);
  if (c->flush) event_free(c->flush);
  if (c->bev && c->tls) {
    /* close_notify, once and without waiting, unless the peer is gone
    ** (on_event made the shutdown quiet then) or it was sent already */
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl && SSL_is_init_finished(ssl) && !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN)) SSL_shutdown(ssl);
    ERR_clear_error();
  }
  if (c->bev) bufferevent_free(c->bev);
  gwr_tls_release(c->tls_ref);
  gwr_http_free(&c->parser);
  gw_buf_free(&c->body);
  if (!c->admin) __atomic_sub_fetch(&c->w->srv->nconns, 1, __ATOMIC_RELAXED);
  free(c);
}

static void arm(GwrConn *c, uint32_t ms) {
  struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
  evtimer_add(c->timer, &tv);
}

static void drive(GwrConn *c);
static void too_large(GwrConn *c);
static int fail_request(GwrConn *c);
static void linger(GwrConn *c);

/* While a response is being written, a client that takes no bytes for
** idle_timeout is dropped; a slow but steady one is not (progress, not a
** deadline). */
static void write_timeout(GwrConn *c, int on) {
  uint32_t ms = c->w->srv->set.idle_timeout_ms;
  struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
  bufferevent_set_timeouts(c->bev, NULL, on ? &tv : NULL);
}

size_t gwr_conn_pending_output(GwrConn *c) {
  return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* The output path. Whatever is queued on the connection's output buffer is
** written by flush_out, run from the loop once the current event is handled
** (so a backend's head and first bytes, or a whole answer, leave in one
** writev): it writes directly, and only what the socket does not take waits
** for libevent's write event. An answer that fits — nearly all of them — thus
** costs one writev and no epoll_ctl (enabling the write event for each
** answer cost two, measured with strace). When the buffer is empty, on_write
** runs: the same callback libevent calls when it drains the buffer itself. */
static void on_write(struct bufferevent *bev, void *arg);

static void flush_soon(GwrConn *c) { event_active(c->flush, EV_WRITE, 0); }

static void flush_out(evutil_socket_t fd, short what, void *arg) {
  GwrConn *c = arg;
  (void)fd; (void)what;
  struct evbuffer *out = bufferevent_get_output(c->bev);
  if (bufferevent_get_enabled(c->bev) & EV_WRITE) return;   /* libevent is writing */
  if (c->tls) {
    /* TLS: the bytes must go through SSL_write: the bufferevent writes
    ** them and calls on_write once they are all out */
    if (evbuffer_get_length(out)) { bufferevent_enable(c->bev, EV_WRITE); return; }
  } else if (evbuffer_get_length(out)) {
    /* the bufferevent keeps its output's start frozen; it thaws it for its
    ** own writes the same way */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
    /* a full socket, or an error: the write event takes over (and reports
    ** the error to on_event) */
    if (n < 0 || evbuffer_get_length(out)) { bufferevent_enable(c->bev, EV_WRITE); return; }
  }
  on_write(c->bev, c);
}

static size_t put(char *b, size_t n, const char *s, size_t len) { memcpy(b + n, s, len); return n + len; }

/* a number, written by the access log's formatter (the one number writer) */
static size_t put_u64(char *b, size_t n, uint64_t v) { return (size_t)(gwr_alog_u64(b + n, v) - b); }

/* RFC 9110 6.6.1: a server with a clock sends Date, in IMF-fixdate. Formatted
** once a second per worker, from the loop's cached time (no system call). */
#define DATE_LEN 29
static const char *worker_date(GwrWorker *w) {
  struct timeval tv;
  if (event_base_gettimeofday_cached(w->base, &tv) != 0) gettimeofday(&tv, NULL);
  if (tv.tv_sec != w->date_at || !w->date[0]) {
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    if (strftime(w->date, sizeof w->date, "%a, %d %b %Y %H:%M:%S GMT", &tm) != DATE_LEN)
      memcpy(w->date, "Thu, 01 Jan 1970 00:00:00 GMT", DATE_LEN + 1);
    w->date_at = tv.tv_sec;
  }
  return w->date;
}

/* Whether preformatted header lines carry a Date field. */
static int has_date(const char *h) {
  for (const char *p = h; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
    if (!strncasecmp(p, "date:", 5)) return 1;
  return 0;
}

/* The status line, Date (unless extra has one: a proxied backend's), framing,
** extra, Connection, the blank line. */
static void write_head(GwrConn *c, struct evbuffer *out, int status, const char *extra, int64_t length, int chunked) {
  char b[256];
  const char *text = gwr_status_text(status);
  size_t tl = strlen(text), n = put(b, 0, "HTTP/1.1 ", 9);
  if (tl > 100) tl = 100;
  n = put_u64(b, n, (uint64_t)(status >= 100 && status <= 999 ? status : 500));
  b[n++] = ' ';
  n = put(b, n, text, tl);
  n = put(b, n, "\r\n", 2);
  if (!has_date(extra)) {
    n = put(b, n, "Date: ", 6);
    n = put(b, n, worker_date(c->w), DATE_LEN);
    n = put(b, n, "\r\n", 2);
  }
  if (length >= 0) { n = put(b, n, "Content-Length: ", 16); n = put_u64(b, n, (uint64_t)length); n = put(b, n, "\r\n", 2); }
  if (chunked) n = put(b, n, "Transfer-Encoding: chunked\r\n", 28);
  evbuffer_add(out, b, n);
  if (extra) evbuffer_add(out, extra, strlen(extra));
  if (!c->keep_alive || (c->w->srv->stopping && !c->admin)) { evbuffer_add(out, "Connection: close\r\n\r\n", 21); c->keep_alive = 0; }
  else if (c->parser.req.minor == 0) evbuffer_add(out, "Connection: keep-alive\r\n\r\n", 26);
  else evbuffer_add(out, "\r\n", 2);
  write_timeout(c, 1);
}

void gwr_conn_respond(GwrConn *c, int status, const char *extra, struct evbuffer *body, int head_only) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  if (c->state == CONN_HEAD || c->state == CONN_BODY) c->keep_alive = 0;   /* the body is never read */
  size_t n = body ? evbuffer_get_length(body) : 0, before = evbuffer_get_length(out);
  int no_body = status == 204 || status == 304 || status < 200;
  write_head(c, out, status, extra, no_body ? -1 : (int64_t)n, 0);
  if (body && !head_only && !no_body) evbuffer_add_buffer(out, body);
  if (body) evbuffer_free(body);
  c->resp_status = status;
  c->resp_bytes += evbuffer_get_length(out) - before;
  gwr_exchange_answered(c);            /* metrics, access log */
  c->ex = NULL;
  c->state = CONN_WRITING;
  if (!c->keep_alive) c->closing = 1;
  evtimer_del(c->timer);
  flush_soon(c);
}

void gwr_conn_error(GwrConn *c, int status, const char *msg, const char *extra) {
  struct evbuffer *b = evbuffer_new();
  GwBuf j = {0};
  GwValue m = { .type = GWV_STRING, .n = (uint32_t)strlen(msg), .u = { .s = msg } };
  gw_buf_adds(&j, "{\"error\":");
  gwv_json(&m, &j);
  gw_buf_printf(&j, ",\"status\":%d}", status);
  evbuffer_add(b, j.p, j.n);
  gw_buf_free(&j);
  GwBuf h = {0};
  gw_buf_adds(&h, "Content-Type: application/json\r\n");
  if (extra) gw_buf_adds(&h, extra);
  int head = c->state == CONN_BUSY && c->parser.req.method == GW_METHOD_HEAD;
  gwr_conn_respond(c, status, gw_buf_cstr(&h), b, head);
  gw_buf_free(&h);
}

void gwr_conn_stream_head(GwrConn *c, int status, const char *headers, int chunked) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  size_t before = evbuffer_get_length(out);
  c->resp_started = 1;
  c->resp_status = status;
  write_head(c, out, status, headers, -1, chunked);
  c->resp_bytes += evbuffer_get_length(out) - before;
  flush_soon(c);
}

void gwr_conn_stream_data(GwrConn *c, const char *p, size_t n, int chunked) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  if (!n) return;
  size_t before = evbuffer_get_length(out);
  if (chunked) evbuffer_add_printf(out, "%zx\r\n", n);
  evbuffer_add(out, p, n);
  if (chunked) evbuffer_add(out, "\r\n", 2);
  c->resp_bytes += evbuffer_get_length(out) - before;
  flush_soon(c);
}

static void next_request(GwrConn *c) {
  if (c->w->srv->stopping && !c->admin) { conn_free(c); return; }   /* draining */
  c->state = CONN_IDLE;
  c->streaming = 0;
  c->body_full = 0;
  c->resp_started = 0;
  c->resp_status = 0;
  c->resp_bytes = 0;
  write_timeout(c, 0);
  gwr_http_reset(&c->parser);
  if (c->body.cap > 65536) gw_buf_free(&c->body);     /* no big buffer kept per idle connection */
  c->body.n = 0;
  arm(c, c->w->srv->set.idle_timeout_ms);
  bufferevent_enable(c->bev, EV_READ);
  drive(c);
}

void gwr_conn_stream_end(GwrConn *c, int chunked, int ok) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  if (chunked && ok) { evbuffer_add(out, "0\r\n\r\n", 5); c->resp_bytes += 5; }
  if (!ok) c->keep_alive = 0;          /* a truncated body: the client must see the close */
  if (c->state == CONN_HEAD || c->state == CONN_BODY) c->keep_alive = 0;   /* the upload was not all read */
  gwr_exchange_answered(c);            /* metrics, access log */
  c->ex = NULL;
  c->paused_by = 0;
  c->state = CONN_WRITING;
  if (!c->keep_alive) c->closing = 1;
  (void)out;
  flush_soon(c);                                 /* on_write follows once all is written */
}

/* Parse what is buffered; act on each parser event. */
static void drive(GwrConn *c) {
  struct evbuffer *in = bufferevent_get_input(c->bev);
  GwrServer *s = c->w->srv;
  while (c->state == CONN_IDLE || c->state == CONN_HEAD || c->state == CONN_BODY) {
    size_t avail = evbuffer_get_length(in);
    /* after the head, the parser may finish without more input (no body) */
    if (avail == 0 && c->state != CONN_BODY) return;
    if (c->state == CONN_IDLE) {
      c->state = CONN_HEAD;
      c->t0_us = gwr_now_us();
      arm(c, s->set.header_timeout_ms);
    }
    struct evbuffer_iovec v = { NULL, 0 };
    if (avail && evbuffer_peek(in, -1, NULL, &v, 1) < 1) return;
    size_t used = 0, blen = 0;
    const char *body = NULL;
    int r = gwr_http_feed(&c->parser, v.iov_base, v.iov_len, &used, &body, &blen);
    int full = 0;
    if (r == GWR_HTTP_BODY && blen) {        /* before the drain: body points into the buffer */
      if (c->streaming) {
        if (c->ex) full = gwr_exchange_body(c->ex, body, blen) > (256u << 10);
        c->body_full = full;
        /* a streamed body is paced by the backend too: its deadline
        ** restarts with every piece, and stops while gwd is not reading */
        if (full) evtimer_del(c->timer); else arm(c, s->set.body_timeout_ms);
      } else if (c->body.n + blen > s->set.http.max_body) {
        evbuffer_drain(in, used);
        too_large(c);
        return;
      } else {
        gw_buf_add(&c->body, body, blen);
      }
    }
    evbuffer_drain(in, used);
    if (!c->admin) GWR_M_ADD(c->w->metrics->bytes_in, used);
    switch (r) {
    case GWR_HTTP_MORE:
      if (avail == 0) return;                        /* need more bytes */
      break;
    case GWR_HTTP_HEAD:
      c->state = CONN_BODY;
      c->keep_alive = c->parser.req.keep_alive;
      arm(c, s->set.body_timeout_ms);
      if (!c->admin && gwr_exchange_head(c)) {
        /* a proxy route: the body streams to the backend as it arrives */
        if (c->state != CONN_BODY) return;  /* answered already (401, 404…) */
        c->streaming = 1;
      } else if (c->parser.req.content_length >= 0 && (uint64_t)c->parser.req.content_length > s->set.http.max_body) {
        too_large(c);                         /* decided before reading the body */
        return;
      }
      if (c->parser.req.expect_continue && evbuffer_get_length(in) == 0 &&
          (c->parser.req.content_length > 0 || c->parser.req.chunked)) {
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        flush_soon(c);
      }
      break;
    case GWR_HTTP_BODY:
      if (full) return;                       /* the backend is slower: wait for gwr_conn_more_body */
      break;
    case GWR_HTTP_DONE:
      c->state = CONN_BUSY;
      evtimer_del(c->timer);
      if (c->streaming) {
        c->streaming = 0;
        if (c->ex) gwr_exchange_body_end(c->ex);
        return;
      }
      /* keep reading (bounded by the read watermark) so that a client
      ** that goes away is noticed and its calls cancelled; pipelined
      ** bytes wait in the buffer until this response is queued */
      gwr_exchange_start(c);
      return;
    case GWR_HTTP_ERROR:
    default:
      if (fail_request(c)) return;
      gwr_conn_error(c, c->parser.status ? c->parser.status : 400, c->parser.error ? c->parser.error : "bad request", NULL);
      return;
    }
  }
}

/* The request failed while an exchange may be streaming it: abort the
** exchange (its transfer must never touch this connection again). Returns
** 1 when the connection was freed: a streamed response had already begun,
** so no error can be written into it. */
static int fail_request(GwrConn *c) {
  if (c->ex) { GwrExchange *ex = c->ex; c->ex = NULL; gwr_exchange_abort(ex); }
  c->streaming = 0;
  c->body_full = 0;
  if (c->resp_started) { conn_free(c); return 1; }
  c->keep_alive = 0;
  c->state = CONN_BUSY;
  bufferevent_disable(c->bev, EV_READ);
  return 0;
}

static void too_large(GwrConn *c) {
  if (fail_request(c)) return;
  gwr_conn_error(c, 413, "body too large", NULL);
}

/* A streaming upload's consumer took some of the queue: parse on (from the
** loop, not from inside the fetch callback that noticed it). */
static void on_kick(evutil_socket_t fd, short what, void *arg) {
  GwrConn *c = arg;
  (void)fd; (void)what;
  c->body_full = 0;
  if (c->state == CONN_BODY) {
    arm(c, c->w->srv->set.body_timeout_ms);
    drive(c);
  }
}

void gwr_conn_more_body(GwrConn *c) {
  struct timeval zero = { 0, 0 };
  evtimer_add(c->kick, &zero);
}

static void on_read(struct bufferevent *bev, void *arg) {
  GwrConn *c = arg;
  (void)bev;
  if (c->state == CONN_LINGER) {
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->lingered += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->lingered > (1u << 20)) conn_free(c);   /* enough: reset it */
    return;
  }
  if (c->state == CONN_BUSY || c->state == CONN_WRITING) return;   /* parsed after the response */
  if (c->body_full) return;            /* a streamed body waits for the backend (read watermark) */
  drive(c);
}

/* Closing after a response: send FIN, then read and drop what the client
** is still sending (an upload we refused) for a moment, so that the
** kernel does not answer it with a reset that could destroy the response
** before the client reads it (RFC 9112 9.6, "lingering close"). */
static void linger(GwrConn *c) {
  c->state = CONN_LINGER;
  write_timeout(c, 0);
  if (c->tls) {
    /* close_notify before the FIN: the client can tell the end of the
    ** response from a truncation. The output is drained, so the alert goes
    ** straight to the socket; if it does not fit, the FIN alone follows. */
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl) SSL_shutdown(ssl);
    ERR_clear_error();
  }
  shutdown(bufferevent_getfd(c->bev), SHUT_WR);
  evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
  c->lingered = 0;
  bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
  bufferevent_enable(c->bev, EV_READ);
  arm(c, 2000);
}

static void on_write(struct bufferevent *bev, void *arg) {
  GwrConn *c = arg;
  (void)bev;
  bufferevent_disable(c->bev, EV_WRITE);   /* drained: the next output goes through flush_out */
  if ((c->state == CONN_BUSY || c->state == CONN_BODY) && c->ex && c->paused_by) { gwr_exchange_drained(c->ex); return; }
  if (c->state != CONN_WRITING) return;
  if (c->closing) { linger(c); return; }
  next_request(c);
}

/* Whether a TLS connection is still in its handshake, and whether the
** client has sent any byte of it (a client that connects and goes away, or
** stays silent, without a byte — a load balancer's TCP check, a browser's
** preconnect — has not failed a handshake: it never began one). */
static int tls_handshaking(GwrConn *c, int *began) {
  SSL *ssl = c->tls && c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
  if (!ssl || SSL_is_init_finished(ssl)) return 0;
  BIO *rb = SSL_get_rbio(ssl);
  *began = rb && BIO_number_read(rb) > 0;
  return 1;
}

/* A TLS handshake failed, or stalled past the first deadline (why: NULL
** for the OpenSSL error of the connection): count it, close quietly. One
** log line a minute per worker at most (a scanner must not be able to
** flood the log). */
static void tls_failed(GwrConn *c, const char *why) {
  GwrWorker *w = c->w;
  uint64_t n = __atomic_add_fetch(&w->tls_handshake_failures, 1, __ATOMIC_RELAXED);
  if (!why) why = gwr_tls_reason(bufferevent_get_openssl_error(c->bev));
  struct timeval tv;
  if (event_base_gettimeofday_cached(w->base, &tv) != 0) gettimeofday(&tv, NULL);
  if (!w->tls_logged_at || tv.tv_sec - w->tls_logged_at >= 60) {
    w->tls_logged_at = tv.tv_sec;
    gwr_log("info", "tls: a handshake from %s failed (%s); worker %d has counted %llu failed handshakes "
            "(this line: once a minute at most)", c->peer, why, w->id, (unsigned long long)n);
  } else {
    gwr_log("debug", "tls: a handshake from %s failed (%s)", c->peer, why);
  }
  ERR_clear_error();
  conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  GwrConn *c = arg;
  (void)bev;
  if (c->tls && (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))) {
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    int began = 0;
    /* OpenSSL 3 reports an EOF in the handshake as an error: it is one
    ** only when the handshake had begun */
    if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && tls_handshaking(c, &began)) {
      if (began) tls_failed(c, NULL);
      else { ERR_clear_error(); conn_free(c); }
      return;
    }
    if (ssl) SSL_set_quiet_shutdown(ssl, 1);   /* the peer is gone or stuck: no close_notify */
  }
  if (what & BEV_EVENT_TIMEOUT) { conn_free(c); return; }   /* the client stopped reading */
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    /* a half-closed client still gets the response already being written;
    ** one that goes away while its request is handled cancels it */
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state == CONN_WRITING &&
        gwr_conn_pending_output(c) > 0) {
      c->closing = 1;
      c->keep_alive = 0;
      bufferevent_disable(c->bev, EV_READ);
      return;
    }
    conn_free(c);
  }
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  GwrConn *c = arg;
  (void)fd; (void)what;
  switch (c->state) {
  case CONN_HEAD: case CONN_BODY: {
    int head = c->state == CONN_HEAD;
    if (fail_request(c)) break;
    gwr_conn_error(c, 408, head ? "request head not received in time" : "request body not received in time", NULL);
    break;
  }
  case CONN_IDLE: case CONN_LINGER: {
    int began = 0;
    /* a handshake begun and not finished in time is a failed one */
    if (c->state == CONN_IDLE && tls_handshaking(c, &began) && began) { tls_failed(c, "timed out"); break; }
    conn_free(c);
    break;
  }
  default:
    break;
  }
}

/* k: the public listener (index into s->set.listen), -1 for the admin one. */
static void accept_conn(GwrWorker *w, evutil_socket_t fd, struct sockaddr *sa, int admin, int k) {
  GwrServer *s = w->srv;
  if (!admin && (__atomic_add_fetch(&s->nconns, 1, __ATOMIC_RELAXED) > (int)s->set.max_connections || s->stopping)) {
    __atomic_sub_fetch(&s->nconns, 1, __ATOMIC_RELAXED);
    GWR_M_ADD(w->metrics->conns_refused, 1);
    evutil_closesocket(fd);            /* accept and close: never a busy loop */
    return;
  }
  /* a TLS listener's contexts come with the worker's program (a reload
  ** brings new ones); without them the connection is refused, never
  ** served in plain text */
  GwrTls *tls = NULL;
  if (!admin && (k < 0 || k >= s->set.nlisten || s->set.tls[k].on)) {
    tls = k >= 0 && k < s->set.nlisten && w->prog->listen_tls ? w->prog->listen_tls[k] : NULL;
    if (!tls) {
      __atomic_sub_fetch(&s->nconns, 1, __ATOMIC_RELAXED);
      evutil_closesocket(fd);
      return;
    }
  }
  GwrConn *c = calloc(1, sizeof *c);
  if (!c) { evutil_closesocket(fd); if (!admin) __atomic_sub_fetch(&s->nconns, 1, __ATOMIC_RELAXED); return; }
  c->w = w;
  c->admin = admin;
  if (!admin) GWR_M_ADD(w->metrics->conns, 1);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
  /* The parser runs without a body limit: max_body is enforced here, per
  ** route, since a proxy route streams bodies of any size. */
  GwrHttpLimits lim = s->set.http;
  lim.max_body = UINT64_MAX;
  gwr_http_init(&c->parser, &lim);
  if (tls) {
    SSL *ssl = gwr_tls_ssl_new(tls);
    c->bev = ssl ? bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (c->bev) {
      c->tls = 1;
      c->tls_ref = tls;
      gwr_tls_retain(tls);
      /* a client that closes without close_notify is an EOF, as on a plain
      ** connection (most HTTP clients do); a TLS error stays an error */
      bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
      if (ssl) SSL_free(ssl);          /* the bufferevent did not take it, nor the socket */
      evutil_closesocket(fd);
    }
  } else {
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
  }
  c->timer = evtimer_new(w->base, on_timer, c);
  c->kick = evtimer_new(w->base, on_kick, c);
  c->flush = event_new(w->base, -1, 0, flush_out, c);
  c->next = w->conns;
  if (w->conns) w->conns->prev = c;
  w->conns = c;
  if (!c->bev || !c->timer || !c->kick || !c->flush) { conn_free(c); return; }
  bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
  bufferevent_setwatermark(c->bev, EV_READ, 0, 256 * 1024);   /* bounded read-ahead */
  /* EV_WRITE (on by default) only while flush_out cannot write it all */
  bufferevent_disable(c->bev, EV_WRITE);
  bufferevent_enable(c->bev, EV_READ);
  c->state = CONN_IDLE;
  arm(c, s->set.header_timeout_ms < s->set.idle_timeout_ms ? s->set.header_timeout_ms : s->set.idle_timeout_ms);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg) {
  GwrWorker *w = arg;
  int k = 0;
  (void)salen;
  while (k < w->nls && w->ls[k] != l) k++;
  accept_conn(w, fd, sa, 0, k < w->nls ? k : -1);
}

static void on_accept_admin(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg) {
  (void)l; (void)salen;
  accept_conn(arg, fd, sa, 1, -1);
}

/* Out of file descriptors (EMFILE/ENFILE): the listening socket stays
** readable, so pause accepting for 100 ms instead of spinning. */
static void on_accept_error(struct evconnlistener *l, void *arg) {
  GwrWorker *w = arg;
  (void)l;
  for (int i = 0; i < w->nls; i++) if (w->ls[i]) evconnlistener_disable(w->ls[i]);
  struct timeval tv = { 0, 100000 };
  evtimer_add(w->resume_ev, &tv);
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg) {
  GwrWorker *w = arg;
  (void)fd; (void)what;
  for (int i = 0; i < w->nls; i++) if (w->ls[i]) evconnlistener_enable(w->ls[i]);
}

/* "8080", ":8080", "host:port", "[v6]:port" → sockaddr. */
static int parse_addr(const char *a, struct sockaddr_storage *ss, int *len) {
  char host[256] = "0.0.0.0";
  const char *port = a;
  const char *colon = strrchr(a, ':');
  if (colon) {
    size_t n = (size_t)(colon - a);
    if (n >= sizeof host) return -1;
    if (n) { memcpy(host, a, n); host[n] = 0; }
    if (host[0] == '[') { memmove(host, host + 1, strlen(host)); char *e = strchr(host, ']'); if (e) *e = 0; }
    port = colon + 1;
  }
  char *end;
  long p = strtol(port, &end, 10);
  if (*end || p <= 0 || p > 65535) return -1;
  *len = sizeof *ss;
  char spec[300];
  snprintf(spec, sizeof spec, strchr(host, ':') ? "[%s]:%ld" : "%s:%ld", host, p);
  return evutil_parse_sockaddr_port(spec, (struct sockaddr *)ss, len);
}

/* Bind and listen. reuseport: one socket per worker on the same address;
** probe: bind once without SO_REUSEPORT first, so that a port held by
** another process (even another gwd) is an error, not a silent split. */
static evutil_socket_t bind_socket(const char *addr, int reuseport, int probe, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  int len;
  if (parse_addr(addr, &ss, &len) != 0) { snprintf(err, errlen, "invalid listen address '%s'", addr); return -1; }
  if (probe) {
    evutil_socket_t t = bind_socket(addr, 0, 0, err, errlen);
    if (t < 0) return -1;
    close(t);
  }
  evutil_socket_t fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { snprintf(err, errlen, "socket: %s", strerror(errno)); return -1; }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, (socklen_t)len) != 0 || listen(fd, 1024) != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* Draining: stop accepting on the public listeners, close connections
** that are between requests; the others — a request head half received
** included: it is in flight — close after their response. */
static void on_stop(evutil_socket_t fd, short what, void *arg) {
  GwrWorker *w = arg;
  (void)fd; (void)what;
  for (int i = 0; i < w->srv->set.nlisten && i < w->nls; i++)
    if (w->ls[i]) { evconnlistener_free(w->ls[i]); w->ls[i] = NULL; }
  for (GwrConn *c = w->conns, *n; c; c = n) {
    n = c->next;
    if (!c->admin && c->state == CONN_IDLE) conn_free(c);
  }
}

static void *worker_main(void *arg) {
  GwrWorker *w = arg;
  event_base_dispatch(w->base);
  return NULL;
}

GwrProg *gwr_worker_prog(GwrWorker *w) {
  gwr_prog_retain(w->prog);
  return w->prog;
}

/* ---- reload -------------------------------------------------------------------- */

/* On the worker's loop: take up the server's current program. New requests
** get it from here on; those in flight keep the reference they hold. */
static void on_swap(evutil_socket_t fd, short what, void *arg) {
  GwrWorker *w = arg;
  GwrServer *s = w->srv;
  (void)fd; (void)what;
  pthread_mutex_lock(&s->prog_mu);
  GwrProg *g = s->prog;
  gwr_prog_retain(g);
  pthread_mutex_unlock(&s->prog_mu);
  GwrProg *old = w->prog;
  w->prog = g;
  gwr_prog_release(old);
  if (g->uses_redis && s->set.redis && !w->redis) {
    char rerr[256];
    w->redis = gwr_redis_new(w->base, s->set.redis, s->set.redis_timeout_ms, rerr, sizeof rerr);
    if (!w->redis) gwr_log("warn", "redis: %s (limits with store redis apply on_error)", rerr);
  }
}

/* The compiler's diagnostics of a reload, as log lines at level (error for
** a refused program, warn for the warnings of one that loaded). */
static void log_diagnostics(const char *text, const char *level) {
  const char *p = text;
  int n = 0;
  while (p && *p && n < 50) {
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > 900) len = 900;               /* the log line's bound, cut on a whole line */
    if (len) {
      /* a quoted source line may hold bytes that are not UTF-8 (the error
      ** may be about them): shown as '?', so that the line is not lost */
      char line[901];
      memcpy(line, p, len);
      line[len] = 0;
      if (!gw_utf8_valid(line, len))
        for (size_t i = 0; i < len; i++) if ((unsigned char)line[i] >= 0x80) line[i] = '?';
      gwr_log(level, "reload: %s", line);
      n++;
    }
    p = e ? e + 1 : NULL;
  }
}

/* The first error line of the diagnostics ("main.gw:3:9: error: …"), for
** the answer to POST /reload; NULL if none. *len: its length. */
static const char *first_error(const char *text, size_t *len) {
  for (const char *p = text; p && *p;) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    const char *x = memmem(p, n, ": error: ", 9);
    if (x) { *len = n; return p; }
    p = e ? e + 1 : NULL;
  }
  return NULL;
}

int gwr_server_reload(GwrServer *s, char *msg, size_t msglen) {
  pthread_mutex_lock(&s->reload_mu);
  char err[512] = "";
  char *diag = NULL;
  size_t dlen = 0;
  FILE *df = open_memstream(&diag, &dlen);
  GwrProg *g = gwr_prog_load(s->program_path, df ? df : stderr, err, sizeof err);
  if (df) fclose(df);
  /* the TLS contexts of the listeners served, from the files as they are now */
  if (g && gwr_prog_listen_tls(g, &s->set, err, sizeof err) != 0) { gwr_prog_release(g); g = NULL; }
  int rc = 0;
  if (!g) {
    size_t fl = 0;
    const char *first = diag ? first_error(diag, &fl) : NULL;
    if (diag) log_diagnostics(diag, "error");
    gwr_log("error", "reload of %s refused: %s (the current program keeps serving)", s->program_path, err);
    /* the answer names the first error itself, not only "see the log" */
    if (first) snprintf(msg, msglen, "refused: %.*s (all diagnostics in the log)", (int)(fl > 400 ? 400 : fl), first);
    else snprintf(msg, msglen, "refused: %s", err);
    pthread_mutex_lock(&s->prog_mu);
    s->reloads_failed++;
    pthread_mutex_unlock(&s->prog_mu);
    rc = -1;
  } else {
    pthread_mutex_lock(&s->prog_mu);
    GwrProg *old = s->prog;
    s->prog = g;
    uint64_t gen = ++s->generation;
    s->reloads_ok++;
    pthread_mutex_unlock(&s->prog_mu);
    for (int i = 0; i < s->nworkers; i++) event_active(s->workers[i].swap_ev, EV_READ, 0);
    gwr_prog_release(old);
    if (diag) log_diagnostics(diag, "warn");      /* warnings: stderr holds only JSON lines */
    gwr_log("info", "reloaded %s: generation %llu, %u endpoints", s->program_path,
            (unsigned long long)gen, g->p->n_endpoints);
    snprintf(msg, msglen, "reloaded: generation %llu, %u endpoints", (unsigned long long)gen, g->p->n_endpoints);
  }
  free(diag);
  pthread_mutex_unlock(&s->reload_mu);
  return rc;
}

int gwr_server_start(GwrServer *s, char *err, size_t errlen) {
  signal(SIGPIPE, SIG_IGN);
  evthread_use_pthreads();
  /* room for max_connections sockets plus backend connections */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rlim_t want = (rlim_t)s->set.max_connections * 2 + 1024;
    if (rl.rlim_cur < want) {
      rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  pthread_mutex_init(&s->prog_mu, NULL);
  pthread_mutex_init(&s->reload_mu, NULL);
  if (!s->generation) s->generation = 1;
  if (!s->boot) { s->boot = s->prog; gwr_prog_retain(s->boot); }
  if (s->nworkers <= 0) s->nworkers = 1;
  if (s->nworkers > GWR_MAX_WORKERS) s->nworkers = GWR_MAX_WORKERS;
  s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
  int has_admin = s->set.admin && s->set.admin[0];
  /* bind every listener first, so a port in use fails before anything starts */
  static evutil_socket_t fds[GWR_MAX_WORKERS][GWR_MAX_LISTEN + 1];
  for (int i = 0; i < s->nworkers; i++) {
    for (int k = 0; k < s->set.nlisten; k++) {
      fds[i][k] = bind_socket(s->set.listen[k], 1, i == 0, err, errlen);
      if (fds[i][k] < 0) goto fail;
    }
    if (i == 0 && has_admin) {
      fds[0][s->set.nlisten] = bind_socket(s->set.admin, 0, 0, err, errlen);
      if (fds[0][s->set.nlisten] < 0) goto fail;
    }
  }
  for (int i = 0; i < s->nworkers; i++) {
    GwrWorker *w = &s->workers[i];
    w->srv = s;
    w->id = i;
    w->prog = s->prog;
    gwr_prog_retain(w->prog);
    /* The epoll changelist folds the changes made to a descriptor within one
    ** pass of the loop into one epoll_ctl: libcurl's socket callback turns
    ** reading off and on again around every transfer on a reused
    ** connection (measured: 7 epoll_ctl per agg-3 request without it). Its
    ** one caveat, dup()ed descriptors, does not apply: nothing here dups. */
    struct event_config *ec = event_config_new();
    if (ec) event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = ec ? event_base_new_with_config(ec) : NULL;
    if (ec) event_config_free(ec);
    if (!w->base) w->base = event_base_new();
    w->fetch = gwr_fetch_new(w->base, NULL);
    w->metrics = gwr_metrics_new();
    if (!w->metrics) abort();              /* a few hundred KB at start */
    w->alog = gwr_alog_new(w->base, s->set.access_log_fd);
    if (w->prog->uses_redis && s->set.redis) {
      char rerr[256];
      w->redis = gwr_redis_new(w->base, s->set.redis, s->set.redis_timeout_ms, rerr, sizeof rerr);
      if (!w->redis) gwr_log("warn", "redis: %s (limits with store redis apply on_error)", rerr);
    }
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->swap_ev = event_new(w->base, -1, 0, on_swap, w);
    int nl = s->set.nlisten + (i == 0 && has_admin ? 1 : 0);
    w->resume_ev = evtimer_new(w->base, on_resume_accept, w);
    for (int k = 0; k < nl; k++) {
      w->ls[k] = evconnlistener_new(w->base, k < s->set.nlisten ? on_accept : on_accept_admin, w,
                                    LEV_OPT_CLOSE_ON_FREE, 0, fds[i][k]);   /* 0: already listening */
      evconnlistener_set_error_cb(w->ls[k], on_accept_error);
      w->nls++;
    }
  }
  for (int i = 0; i < s->nworkers; i++) pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
  s->health = gwr_health_start(s);       /* active health checks: their own thread */
  return 0;
fail:
  free(s->workers);
  s->workers = NULL;
  return -1;
}

void gwr_server_stop(GwrServer *s) {
  s->stopping = 1;
  for (int i = 0; i < s->nworkers; i++) event_active(s->workers[i].stop_ev, EV_READ, 0);
  /* drain: wait for open connections to finish, up to the deadline (the
  ** admin connections do not count: they stay up while draining) */
  for (uint32_t waited = 0; waited < s->set.drain_ms; waited += 20) {
    if (__atomic_load_n(&s->nconns, __ATOMIC_RELAXED) <= 0) break;
    usleep(20000);
  }
  for (int i = 0; i < s->nworkers; i++) event_base_loopbreak(s->workers[i].base);
  for (int i = 0; i < s->nworkers; i++) pthread_join(s->workers[i].thread, NULL);
  gwr_health_stop(s->health);
  s->health = NULL;
  for (int i = 0; i < s->nworkers; i++) {
    GwrWorker *w = &s->workers[i];
    while (w->conns) conn_free(w->conns);      /* past the drain deadline */
    gwr_alog_free(w->alog);                    /* writes what is buffered */
    w->alog = NULL;
    for (int k = 0; k < w->nls; k++) if (w->ls[k]) evconnlistener_free(w->ls[k]);
    gwr_fetch_free(w->fetch);
    if (w->redis) gwr_redis_free(w->redis);
    gwr_prog_release(w->prog);
    event_free(w->stop_ev);
    event_free(w->swap_ev);
    event_free(w->resume_ev);
    event_base_free(w->base);
    free(w->metrics);
    w->metrics = NULL;
  }
  free(s->workers);
  s->workers = NULL;
}
