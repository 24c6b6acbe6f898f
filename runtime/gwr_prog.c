/*
** gwr_prog.c — loading a program for gwd: read a .gwb (or compile .gw files
** in process), verify it, resolve env() references, evaluate backend
** headers, load API keys, and build the router and the per-call extraction
** paths; read the TLS files (listener certificates and keys, backend CAs
** and client certificates) so that a bad one fails the load. Also the
** server settings: defaults, then the program's server { }.
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
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include "gwr.h"
#include "gwr_metrics.h"
#include "gwr_accesslog.h"
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
  if (g->tls && g->p->n_servers)
    for (uint32_t i = 0; i < g->p->servers[0].listen_count; i++) gwr_tls_release(g->tls[i]);
  free(g->tls);
  if (g->listen_tls) for (int k = 0; k < GWR_MAX_LISTEN; k++) gwr_tls_release(g->listen_tls[k]);
  free(g->listen_tls);
  if (g->backends)
    for (uint32_t i = 0; i < g->p->n_backends; i++) {
      free(g->backends[i].urls);
      free(g->backends[i].headers);
      gwr_be_free(g->backends[i].be);
    }
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

/* Whether path opens for reading; else a message naming what it is for. */
static int tls_file(const char *path, const char *backend, const char *field, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) return fail(err, errlen, "backend %s: cannot read tls %s '%s': %s", backend, field, path, strerror(errno));
  fclose(f);
  return 0;
}

/* backend { tls { ca cert key verify } }: the paths (resolved by gwc against
** the .gw file's directory) for libcurl, each file read once now so that a
** missing or invalid one fails the load instead of every call. */
static int backend_tls(GwrProg *g, uint32_t b, char *err, size_t errlen) {
  const GwProgram *p = g->p;
  const GwBackend *B = &p->backends[b];
  GwrFetchTls *T = &g->backends[b].tls;
  const char *name = cstr(p, B->name);
  T->ca = B->tls_ca != GW_NONE ? cstr(p, B->tls_ca) : NULL;
  T->cert = B->tls_cert != GW_NONE ? cstr(p, B->tls_cert) : NULL;
  T->key = B->tls_key != GW_NONE ? cstr(p, B->tls_key) : NULL;
  T->no_verify = B->tls_verify == 0;
  int rc = 0;
  BIO *bio = NULL;
  X509 *x = NULL;
  EVP_PKEY *k = NULL;
  if (T->ca) {
    if (tls_file(T->ca, name, "ca", err, errlen)) return -1;
    bio = BIO_new_file(T->ca, "r");
    x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    if (!x) { rc = fail(err, errlen, "backend %s: tls ca '%s' holds no PEM certificate", name, T->ca); goto done; }
    X509_free(x); x = NULL;
    BIO_free(bio); bio = NULL;
  }
  if (T->key && !T->cert) { rc = fail(err, errlen, "backend %s: tls key '%s' needs a cert", name, T->key); goto done; }
  if (T->cert) {
    const char *kf = T->key ? T->key : T->cert;    /* without key: the key is in the cert file */
    if (tls_file(T->cert, name, "cert", err, errlen) || tls_file(kf, name, "key", err, errlen)) return -1;
    bio = BIO_new_file(T->cert, "r");
    x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio); bio = NULL;
    if (!x) { rc = fail(err, errlen, "backend %s: tls cert '%s' holds no PEM certificate", name, T->cert); goto done; }
    bio = BIO_new_file(kf, "r");
    /* never prompted for: an encrypted key is refused */
    k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
    if (!k) { rc = fail(err, errlen, "backend %s: tls key '%s' is not a PEM private key (or it is encrypted)", name, kf); goto done; }
    if (X509_check_private_key(x, k) != 1) {
      rc = fail(err, errlen, "backend %s: tls key '%s' does not match cert '%s'", name, kf, T->cert);
      goto done;
    }
  }
done:
  BIO_free(bio);
  X509_free(x);
  EVP_PKEY_free(k);
  ERR_clear_error();    /* a load may run on a worker (reload): leave its queue empty */
  return rc;
}

/* The program's TLS listeners: their certificates and keys are read and
** checked now, one context set per listener (see gwr_prog_listen_tls for
** which listener serves with which). */
static int listeners_tls(GwrProg *g, char *err, size_t errlen) {
  const GwProgram *p = g->p;
  g->listen_tls = calloc(GWR_MAX_LISTEN, sizeof *g->listen_tls);
  if (!g->listen_tls) abort();
  if (!p->n_servers) return 0;
  const GwServer *S = &p->servers[0];
  g->tls = calloc((size_t)S->listen_count + 1, sizeof *g->tls);
  if (!g->tls) abort();
  for (uint32_t i = 0; i < S->listen_count; i++) {
    const GwListen *L = &p->listens[S->listen_first + i];
    if (!L->tls) continue;
    GwrTlsPair *pairs = calloc((size_t)L->cert_count + 1, sizeof *pairs);
    if (!pairs) abort();
    for (uint32_t k = 0; k < L->cert_count; k++) {
      pairs[k].cert = cstr(p, p->certs[L->cert_first + k].cert);
      pairs[k].key = cstr(p, p->certs[L->cert_first + k].key);
    }
    char what[300];
    snprintf(what, sizeof what, "listener %s", cstr(p, L->addr));
    g->tls[i] = gwr_tls_new(pairs, (int)L->cert_count, what, err, errlen);
    free(pairs);
    if (!g->tls[i]) return -1;
  }
  return 0;
}

/* The program's listener of address addr (as written), or -1. */
static int prog_listener(const GwProgram *p, const char *addr) {
  if (!p->n_servers) return -1;
  const GwServer *S = &p->servers[0];
  for (uint32_t i = 0; i < S->listen_count; i++)
    if (!strcmp(cstr(p, p->listens[S->listen_first + i].addr), addr)) return (int)i;
  return -1;
}

int gwr_prog_listen_tls(GwrProg *g, const GwrSettings *s, char *err, size_t errlen) {
  GwrTls *made[GWR_MAX_LISTEN] = {0};
  for (int k = 0; k < s->nlisten && k < GWR_MAX_LISTEN; k++) {
    const GwrListenTls *L = &s->tls[k];
    GwrTls *t = NULL;
    if (L->from_cli) {
      if (L->on) {
        char what[300];
        snprintf(what, sizeof what, "--listen-tls %s", s->listen[k]);
        if (!(t = gwr_tls_new(L->pairs, L->npairs, what, err, errlen))) goto fail;
      }
    } else {
      int i = prog_listener(g->p, s->listen[k]);
      t = i >= 0 && g->tls ? g->tls[i] : NULL;
      if (L->on && !t) {
        fail(err, errlen, "listener %s serves TLS, but the program has no `listen %s tls { … }` any more "
             "(a listener changes between plain and TLS only at a restart)", s->listen[k], s->listen[k]);
        goto fail;
      }
      if (!L->on && t) {
        fail(err, errlen, "listener %s serves plain HTTP, but the program now has `tls` for it "
             "(a listener changes between plain and TLS only at a restart)", s->listen[k]);
        goto fail;
      }
      if (t) gwr_tls_retain(t);
    }
    made[k] = t;
  }
  for (int k = 0; k < GWR_MAX_LISTEN; k++) {
    gwr_tls_release(g->listen_tls[k]);
    g->listen_tls[k] = made[k];
  }
  return 0;
fail:
  for (int k = 0; k < GWR_MAX_LISTEN; k++) gwr_tls_release(made[k]);
  return -1;
}

/* s as JSON text, quoted and escaped (once, so that a request only copies it). */
static GwrText json_text(GwrProg *g, const char *pre, const char *s, const char *post) {
  size_t a = strlen(pre), n = strlen(s), z = strlen(post);
  char *t = gw_arena_alloc_raw(&g->arena, a + GWR_ALOG_STR_MAX(n) + z + 1);
  memcpy(t, pre, a);
  char *e = gwr_alog_str(t + a, s, n);
  memcpy(e, post, z + 1);
  return (GwrText){ t, (uint32_t)(e + z - t) };
}

/* Metric slots by name (a reload finds the slots of the names it had), and
** what the access log writes of the program: its texts as JSON, and the query
** parameters it masks. */
static void metric_slots(GwrProg *g) {
  const GwProgram *p = g->p;
  g->ep_slot = gw_arena_alloc(&g->arena, sizeof *g->ep_slot * (p->n_endpoints + 1));
  for (uint32_t i = 0; i < p->n_endpoints; i++) {
    const GwEndpoint *E = &p->endpoints[i];
    char *name = gw_arena_printf(&g->arena, "%s %s", gw_method_names[E->method], cstr(p, E->path));
    g->ep_slot[i] = gwr_metrics_slot(GWR_MK_ROUTE, name);
  }
  g->be_slot = gw_arena_alloc(&g->arena, sizeof *g->be_slot * (p->n_backends + 1));
  for (uint32_t i = 0; i < p->n_backends; i++) g->be_slot[i] = gwr_metrics_slot(GWR_MK_BACKEND, cstr(p, p->backends[i].name));
  g->auth_slot = gw_arena_alloc(&g->arena, sizeof *g->auth_slot * (p->n_auths + 1));
  g->mask_names = gw_arena_alloc(&g->arena, sizeof *g->mask_names * (p->n_auths + 1));
  for (uint32_t i = 0; i < p->n_auths; i++) {
    g->auth_slot[i] = gwr_metrics_slot(GWR_MK_POLICY, cstr(p, p->auths[i].name));
    if (p->auths[i].from == 2) g->mask_names[g->nmask++] = cstr(p, p->auths[i].from_name);
  }
  g->limit_slot = gw_arena_alloc(&g->arena, sizeof *g->limit_slot * (p->n_limits + 1));
  for (uint32_t i = 0; i < p->n_limits; i++) g->limit_slot[i] = gwr_metrics_slot(GWR_MK_LIMIT, cstr(p, p->limits[i].name));
  g->alog_route = gw_arena_alloc(&g->arena, sizeof *g->alog_route * (p->n_endpoints + 1));
  g->alog_proxy = gw_arena_alloc(&g->arena, sizeof *g->alog_proxy * (p->n_endpoints + 1));
  for (uint32_t i = 0; i < p->n_endpoints; i++) {
    const GwEndpoint *E = &p->endpoints[i];
    g->alog_route[i] = json_text(g, "", cstr(p, E->path), "");
    if (E->proxy != GW_NONE)
      g->alog_proxy[i] = json_text(g, "{\"name\":\"proxy\",\"backend\":", cstr(p, p->backends[E->proxy].name), ",\"status\":");
  }
  g->alog_call = gw_arena_alloc(&g->arena, sizeof *g->alog_call * (p->n_calls + 1));
  for (uint32_t c = 0; c < p->n_calls; c++) {
    GwrText name = json_text(g, "{\"name\":", cstr(p, p->calls[c].name), ",\"backend\":");
    g->alog_call[c] = json_text(g, name.p, cstr(p, p->backends[p->calls[c].backend].name), ",\"status\":");
  }
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

  for (uint32_t b = 0; b < p->n_backends; b++)
    if (backend_tls(g, b, err, errlen)) { prog_free(g); return NULL; }
  if (listeners_tls(g, err, errlen)) { prog_free(g); return NULL; }

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

  /* per backend: targets, health, breaker, connection slots (fresh at every load) */
  for (uint32_t b = 0; b < p->n_backends; b++) {
    GwrBeConfig bc;
    gwr_be_config(&bc, p, b);
    g->backends[b].be = gwr_be_new(&bc, (const char *const *)g->backends[b].urls, g->backends[b].nurls);
  }
  g->router = gwr_router_build(p);
  if (!g->router) { fail(err, errlen, "%s: cannot build the route table", path); prog_free(g); return NULL; }
  g->paths = calloc((size_t)p->n_calls + 1, sizeof *g->paths);
  for (uint32_t c = 0; c < p->n_calls; c++) g->paths[c] = gwr_paths_build(&g->arena, p, &p->calls[c]);
  metric_slots(g);
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
  s->cache_size = 64u << 20;
  s->redis_timeout_ms = 50;
  s->admin = "127.0.0.1:9901";
  s->access_log_fd = 1;
}

void gwr_settings_from_program(GwrSettings *s, const GwProgram *p) {
  if (!p->n_servers) { s->listen[0] = "8080"; s->nlisten = 1; return; }
  const GwServer *S = &p->servers[0];
  s->nlisten = 0;
  for (uint32_t i = 0; i < S->listen_count && s->nlisten < GWR_MAX_LISTEN; i++) {
    const GwListen *L = &p->listens[S->listen_first + i];
    memset(&s->tls[s->nlisten], 0, sizeof s->tls[s->nlisten]);
    s->tls[s->nlisten].on = L->tls != 0;     /* its contexts: the program's (gwr_prog_listen_tls) */
    s->listen[s->nlisten++] = cstr(p, L->addr);
  }
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
  SET(cache_size, cache_size);
  SET(redis_timeout_ms, redis_timeout_ms);
  if (S->redis != GW_NONE) s->redis = cstr(p, S->redis);
#undef SET
}

static int log_min = 1;                 /* 0 debug, 1 info, 2 warn, 3 error */

static int level_of(const char *name) {
  static const char *const names[] = { "debug", "info", "warn", "error" };
  for (int i = 0; i < 4; i++) if (!strcmp(name, names[i])) return i;
  return -1;
}

int gwr_log_set_level(const char *name) {
  int l = level_of(name);
  if (l < 0) return -1;
  log_min = l;
  return 0;
}

void gwr_log(const char *level, const char *fmt, ...) {
  int l = level_of(level);
  if (l >= 0 && l < log_min) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  GwBuf b = {0};
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  gw_buf_printf(&b, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level);
  /* as the access log writes strings: a message that is not UTF-8 (a file
  ** name, a message cut inside a character) has its high bytes escaped as
  ** \u00XX, so the line stays JSON and the message is not lost */
  gwr_alog_buf_str(&b, msg, strlen(msg));
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
