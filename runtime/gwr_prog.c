/*
** gwr_prog.c — loading a program for gwd: read a .gwb (or compile .gw files
** in process), verify it, resolve env() references, evaluate backend
** headers, load API keys, and build the router and the per-call extraction
** paths. Also the server settings: defaults, then the program's server { }.
*/
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include "gwr.h"
#include "gwc.h"

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && !strcmp(s + n - m, suf);
}

static const char *cstr(const GwProgram *p, uint32_t k) { return gw_const_str(p, k, NULL); }

void gwr_prog_retain(GwrProg *g) { __atomic_add_fetch(&g->refcount, 1, __ATOMIC_RELAXED); }

static void prog_free(GwrProg *g) {
  if (!g) return;
  if (g->router) gwr_router_free(g->router);
  if (g->backends)
    for (uint32_t i = 0; i < g->p->n_backends; i++) { free(g->backends[i].urls); free(g->backends[i].headers); }
  free(g->backends);
  if (g->jwts) for (uint32_t i = 0; i < g->p->n_auths; i++) gwr_jwt_free(g->jwts[i]);
  free(g->jwts);
  free(g->auths);
  free(g->paths);
  free(g->envs);
  free(g->consts);
  gw_program_free(g->p);
  gw_arena_free(&g->arena);
  free(g);
}

void gwr_prog_release(GwrProg *g) {
  if (g && __atomic_sub_fetch(&g->refcount, 1, __ATOMIC_ACQ_REL) == 0) prog_free(g);
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

int gwr_apikey_lookup(const GwrProg *g, uint32_t a, const unsigned char sha[32], const char **client) {
  const GwrAuthRt *A = &g->auths[a];
  int found = -1;
  for (int i = 0; i < A->nkeys; i++)            /* no early exit: constant time over the keys */
    if (CRYPTO_memcmp(A->keys[i].sha, sha, 32) == 0 && found < 0) found = i;
  if (found < 0) return 0;
  *client = A->keys[found].client;
  return 1;
}

/* A keys file: "client-name sha256-hex" lines, '#' comments, blank lines. */
static int load_keys(GwrProg *g, uint32_t a, const char *path, char *err, size_t errlen) {
  char *text; size_t len;
  if (gw_read_file(path, 16u << 20, &text, &len) != 0)
    return fail(err, errlen, "auth %s: cannot read keys file '%s': %s", cstr(g->p, g->p->auths[a].name), path, strerror(errno));
  GwrAuthRt *A = &g->auths[a];
  int cap = 16, line = 0;
  A->keys = gw_arena_alloc(&g->arena, sizeof *A->keys * (size_t)cap);
  for (char *s = text, *e; s < text + len; s = e + 1) {
    e = memchr(s, '\n', (size_t)(text + len - s));
    if (!e) e = text + len;
    line++;
    char *p = s;
    while (p < e && isspace((unsigned char)*p)) p++;
    if (p == e || *p == '#') continue;
    char *n0 = p;
    while (p < e && !isspace((unsigned char)*p)) p++;
    char *n1 = p;
    while (p < e && isspace((unsigned char)*p)) p++;
    char *h0 = p;
    while (p < e && !isspace((unsigned char)*p)) p++;
    char *h1 = p;
    while (p < e && isspace((unsigned char)*p)) p++;
    unsigned char sha[32];
    int ok = h1 - h0 == 64 && p == e;
    for (int i = 0; ok && i < 32; i++) {
      int hi = OPENSSL_hexchar2int((unsigned char)h0[2 * i]), lo = OPENSSL_hexchar2int((unsigned char)h0[2 * i + 1]);
      if (hi < 0 || lo < 0) ok = 0;
      else sha[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!ok) { free(text); return fail(err, errlen, "%s:%d: expected 'client-name sha256-hex'", path, line); }
    if (A->nkeys == cap) {
      GwrApiKey *k = gw_arena_alloc(&g->arena, sizeof *k * (size_t)cap * 2);
      memcpy(k, A->keys, sizeof *k * (size_t)cap);
      A->keys = k;
      cap *= 2;
    }
    A->keys[A->nkeys].client = gw_arena_strndup(&g->arena, n0, (size_t)(n1 - n0));
    memcpy(A->keys[A->nkeys].sha, sha, 32);
    A->nkeys++;
  }
  free(text);
  return 0;
}

GwrProg *gwr_prog_load(const char *path, FILE *diag, char *err, size_t errlen) {
  GwBuf img = {0};
  if (ends_with(path, ".gwb")) {
    char *data; size_t len;
    if (gw_read_file(path, GW_MAX_FILE_SIZE, &data, &len) != 0) {
      fail(err, errlen, "cannot read '%s': %s", path, errno == EFBIG ? "file too large" : strerror(errno));
      return NULL;
    }
    img.p = data; img.n = len;
  } else {
    struct stat st;
    if (stat(path, &st) != 0) {
      fail(err, errlen, "cannot read '%s': %s", path, strerror(errno));
      return NULL;
    }
    const char *paths[1] = { path };
    int rc = gwc_compile_paths(paths, 1, diag, &img);
    if (rc) {
      gw_buf_free(&img);
      fail(err, errlen, rc == 2 ? "cannot read '%s'" : "'%s' has errors (see the diagnostics above)", path);
      return NULL;
    }
  }
  char verr[256];
  GwProgram *p = gw_program_load(img.p, img.n, verr, sizeof verr);
  gw_buf_free(&img);
  if (!p) { fail(err, errlen, "%s: %s", path, verr); return NULL; }

  GwrProg *g = calloc(1, sizeof *g);
  if (!g) abort();
  g->p = p;
  g->refcount = 1;
  gw_arena_init(&g->arena);
  snprintf(g->source, sizeof g->source, "%s", path);

  /* the constants as values, once: CONST pushes them without allocating */
  g->consts = calloc((size_t)p->n_consts + 1, sizeof *g->consts);
  for (uint32_t k = 0; k < p->n_consts; k++) {
    g->consts[k].type = p->consts[k].kind ? GWV_NUMBER : GWV_STRING;
    g->consts[k].u.s = gw_const_str(p, k, &g->consts[k].n);
  }

  /* env() references: the values live only in memory, never in a file */
  g->envs = calloc((size_t)p->n_envs + 1, sizeof *g->envs);
  for (uint32_t i = 0; i < p->n_envs; i++) {
    const char *v = getenv(cstr(p, p->envs[i].name));
    if (!v && p->envs[i].dflt != GW_NONE) v = cstr(p, p->envs[i].dflt);
    g->envs[i] = v ? gwv_string_copy(&g->arena, v, strlen(v)) : &gwv_null;
  }

  /* backends: base URLs and static headers */
  g->backends = calloc((size_t)p->n_backends + 1, sizeof *g->backends);
  for (uint32_t b = 0; b < p->n_backends; b++) {
    const GwBackend *B = &p->backends[b];
    GwrBackend *R = &g->backends[b];
    R->urls = calloc(B->url_count + 1, sizeof *R->urls);
    for (uint32_t k = 0; k < B->url_count; k++) {
      const GwUrl *u = &p->urls[B->url_first + k];
      const char *s = NULL;
      if (u->str != GW_NONE) s = cstr(p, u->str);
      else if (!GWV_IS_NULL(g->envs[u->env])) s = g->envs[u->env]->u.s;
      if (!s) {
        fail(err, errlen, "backend %s: url env(\"%s\") is not set and has no default", cstr(p, B->name),
             cstr(p, p->envs[u->env].name));
        prog_free(g);
        return NULL;
      }
      if (strncmp(s, "http://", 7) && strncmp(s, "https://", 8)) {
        fail(err, errlen, "backend %s: url '%s' does not start with http:// or https://", cstr(p, B->name), s);
        prog_free(g);
        return NULL;
      }
      size_t n = strlen(s);
      while (n > 8 && s[n - 1] == '/') n--;
      R->urls[R->nurls++] = gw_arena_strndup(&g->arena, s, n);
    }
    R->headers = calloc(1, sizeof *R->headers);
    if (B->headers != GW_NONE) {
      GwrVm vm;
      memset(&vm, 0, sizeof vm);
      vm.p = p; vm.arena = &g->arena; vm.envs = g->envs; vm.consts = g->consts; vm.max_steps = GWR_VM_MAX_STEPS;
      GwValue *h = gwr_vm_run(&vm, B->headers, NULL);
      if (!h || h->type != GWV_OBJECT) {
        fail(err, errlen, "backend %s: headers: %s", cstr(p, B->name), h ? "not an object" : vm.error);
        prog_free(g);
        return NULL;
      }
      free(R->headers);
      R->headers = calloc(h->n + 1, sizeof *R->headers);
      int nh = 0;
      for (uint32_t i = 0; i < h->n; i++) {
        const GwMember *m = &h->u.members[i];
        if (GWV_IS_NULL(m->val)) continue;
        GwBuf v = {0};
        gwv_render(m->val, &v);
        /* an env() value is outside the compiler's reach: check it here */
        int ok = gw_http_token(m->key, m->klen);
        for (size_t k = 0; k < v.n; k++)
          if (v.p[k] == '\r' || v.p[k] == '\n' || v.p[k] == 0) ok = 0;
        if (!ok) {
          gw_buf_free(&v);
          fail(err, errlen, "backend %s: header '%.*s' has an invalid name or a value with CR, LF or NUL",
               cstr(p, B->name), (int)m->klen, m->key);
          prog_free(g);
          return NULL;
        }
        R->headers[nh++] = gw_arena_printf(&g->arena, "%.*s: %s", (int)m->klen, m->key, gw_buf_cstr(&v));
        gw_buf_free(&v);
      }
    }
  }

  g->auths = calloc((size_t)p->n_auths + 1, sizeof *g->auths);
  for (uint32_t a = 0; a < p->n_auths; a++)
    if (p->auths[a].from == 0) {
      char *h = gw_arena_strndup(&g->arena, cstr(p, p->auths[a].from_name), strlen(cstr(p, p->auths[a].from_name)));
      for (char *q = h; *q; q++) *q = (char)tolower((unsigned char)*q);
      g->auths[a].header = h;
    }
  for (uint32_t a = 0; a < p->n_auths; a++)
    if (p->auths[a].type == 1 && p->auths[a].keys_file != GW_NONE &&
        load_keys(g, a, cstr(p, p->auths[a].keys_file), err, errlen)) {
      prog_free(g);
      return NULL;
    }

  g->jwts = calloc((size_t)p->n_auths + 1, sizeof *g->jwts);
  for (uint32_t a = 0; a < p->n_auths; a++)
    if (p->auths[a].type == 0 && !(g->jwts[a] = gwr_jwt_new(p, a, err, errlen))) {
      prog_free(g);
      return NULL;
    }
  for (uint32_t i = 0; i < p->n_limits; i++) if (p->limits[i].store == 1) g->uses_redis = 1;

  g->router = gwr_router_build(p);
  if (!g->router) { fail(err, errlen, "%s: cannot build the route table", path); prog_free(g); return NULL; }
  g->paths = calloc((size_t)p->n_calls + 1, sizeof *g->paths);
  for (uint32_t c = 0; c < p->n_calls; c++) g->paths[c] = gwr_paths_build(&g->arena, p, &p->calls[c]);
  return g;
}

void gwr_settings_defaults(GwrSettings *s) {
  memset(s, 0, sizeof *s);
  gwr_http_default_limits(&s->http);
  s->workers = 0;                       /* 0: one per core */
  s->header_timeout_ms = 10000;
  s->body_timeout_ms = 30000;
  s->idle_timeout_ms = 60000;
  s->drain_ms = 30000;
  s->max_connections = 10000;
  s->max_json_depth = 64;
  s->limit_keys = 100000;
  s->redis_timeout_ms = 50;
  s->admin = "127.0.0.1:9901";
}

void gwr_settings_from_program(GwrSettings *s, const GwProgram *p) {
  if (!p->n_servers) { s->listen[0] = "8080"; s->nlisten = 1; return; }
  const GwServer *S = &p->servers[0];
  s->nlisten = 0;
  for (uint32_t i = 0; i < S->listen_count && s->nlisten < GWR_MAX_LISTEN; i++)
    s->listen[s->nlisten++] = cstr(p, p->listens[S->listen_first + i].addr);
  if (!s->nlisten) s->listen[s->nlisten++] = "8080";
  if (S->admin != GW_NONE) s->admin = cstr(p, S->admin);
#define SET(field, src) if (S->src != GW_NONE) s->field = S->src
  SET(workers, workers);
  SET(http.max_body, max_body);
  SET(http.max_header_bytes, max_header);
  SET(http.max_headers, max_headers);
  SET(http.max_request_line, max_request_line);
  SET(header_timeout_ms, header_timeout_ms);
  SET(body_timeout_ms, body_timeout_ms);
  SET(idle_timeout_ms, idle_timeout_ms);
  SET(drain_ms, drain_ms);
  SET(max_connections, max_connections);
  if (S->max_json_depth != GW_NONE) s->max_json_depth = (int)S->max_json_depth;
  SET(limit_keys, limit_keys);
  SET(redis_timeout_ms, redis_timeout_ms);
  if (S->redis != GW_NONE) s->redis = cstr(p, S->redis);
#undef SET
}

void gwr_log(const char *level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  GwBuf b = {0};
  GwValue v = { .type = GWV_STRING, .n = (uint32_t)strlen(msg), .u = { .s = msg } };
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  gw_buf_printf(&b, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level);
  gwv_json(&v, &b);
  gw_buf_adds(&b, "}\n");
  fwrite(b.p, 1, b.n, stderr);
  gw_buf_free(&b);
}

/* server { redis env("…") }: resolved like every env() reference. */
const char *gwr_prog_redis(const GwrProg *g) {
  const GwProgram *p = g->p;
  if (!p->n_servers) return NULL;
  const GwServer *S = &p->servers[0];
  if (S->redis != GW_NONE) return cstr(p, S->redis);
  if (S->redis_env != GW_NONE && !GWV_IS_NULL(g->envs[S->redis_env])) return g->envs[S->redis_env]->u.s;
  return NULL;
}
