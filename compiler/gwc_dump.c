/*
** gwc_dump.c — `gwc dump` and `gwc routes`: a verified program printed for
** people. The disassembler is driven by the opcode table (gw_ops): operand
** formats decide how an operand prints, so a new opcode needs no change here.
**
** Layout: declarations, the route table, then per endpoint its policies,
** calls (with dependencies and read paths), guards, response, and the code
** of every block it owns with source lines; lambda blocks print under the
** instruction that runs them.
*/
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gwc.h"

typedef struct D { const GwProgram *p; FILE *out; char cwd[PATH_MAX]; } D;

static void put_str(D *d, uint32_t k, int max) {
  uint32_t n;
  const char *s = gw_const_str(d->p, k, &n);
  if (gw_const_is_number(d->p, k)) { fprintf(d->out, "%.*s", (int)n, s); return; }
  fputc('"', d->out);
  for (uint32_t i = 0; i < n; i++) {
    if (max && (int)i >= max) { fputs("…", d->out); break; }
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(d->out, "\\%c", c);
    else if (c == '\n') fputs("\\n", d->out);
    else if (c == '\t') fputs("\\t", d->out);
    else if (c < 0x20) fprintf(d->out, "\\u%04x", c);
    else fputc(c, d->out);
  }
  fputc('"', d->out);
}

static const char *cstr(D *d, uint32_t k) {
  return k == GW_NONE ? "-" : gw_const_str(d->p, k, NULL);
}

/* File names under the current directory print relative to it. */
static const char *rel(D *d, uint32_t k) {
  const char *s = cstr(d, k);
  size_t n = strlen(d->cwd);
  if (n && !strncmp(s, d->cwd, n) && s[n] == '/') return s + n + 1;
  return s;
}

static void put_ms(D *d, uint32_t ms) {
  if (ms == GW_NONE) fputs("-", d->out);
  else if (ms && ms % 86400000 == 0) fprintf(d->out, "%ud", ms / 86400000);
  else if (ms && ms % 3600000 == 0) fprintf(d->out, "%uh", ms / 3600000);
  else if (ms && ms % 60000 == 0) fprintf(d->out, "%um", ms / 60000);
  else if (ms && ms % 1000 == 0) fprintf(d->out, "%us", ms / 1000);
  else fprintf(d->out, "%ums", ms);
}

static void put_route(D *d, uint32_t first, uint32_t count) {
  if (!count) { fputs("/", d->out); return; }
  for (uint32_t i = 0; i < count; i++) {
    const GwSeg *s = &d->p->segs[first + i];
    const char *t = cstr(d, s->text);
    switch (s->kind) {
    case GW_SEG_STATIC: fprintf(d->out, "/%s", t); break;
    case GW_SEG_STRING: fprintf(d->out, "/{%s}", t); break;
    case GW_SEG_TAIL: fprintf(d->out, "/{%s*}", t); break;
    default: fprintf(d->out, "/{%s:%s}", t, gw_seg_names[s->kind]); break;
    }
  }
}

static const char *call_name(D *d, uint32_t ep, uint32_t c) {
  if (ep == GW_NONE || ep >= d->p->n_endpoints) return "?";
  const GwEndpoint *E = &d->p->endpoints[ep];
  return c < E->call_count ? cstr(d, d->p->calls[E->call_first + c].name) : "?";
}

static const char *param_name(D *d, uint32_t ep, uint32_t k) {
  if (ep == GW_NONE) return "?";
  const GwEndpoint *E = &d->p->endpoints[ep];
  for (uint32_t i = 0, n = 0; i < E->seg_count; i++) {
    const GwSeg *s = &d->p->segs[E->seg_first + i];
    if (s->kind == GW_SEG_STATIC) continue;
    if (n++ == k) return cstr(d, s->text);
  }
  return "?";
}

static void put_block(D *d, uint32_t b, int indent);

static void put_ins(D *d, const GwBlock *B, uint32_t pc, int indent) {
  const GwProgram *p = d->p;
  uint32_t ins = p->code[B->code_first + pc].ins, line = p->lines[B->code_first + pc].line;
  uint32_t op = GW_INS_OP(ins), a = GW_INS_A(ins);
  const GwOpInfo *O = &gw_ops[op];
  fprintf(d->out, "%*s%04u  %-9s", indent, "", pc, O->name);
  int start = 0;
  (void)start;
  char buf[64];
  long w = 0;
  switch (O->fmt) {
  case GW_FMT_NONE: break;
  case GW_FMT_CONST: w = fprintf(d->out, "%-4u ", a); put_str(d, a, 40); break;
  case GW_FMT_ENV:
    w = fprintf(d->out, "%-4u env(\"%s\"", a, cstr(d, p->envs[a].name));
    if (p->envs[a].dflt != GW_NONE) { fputs(", ", d->out); put_str(d, p->envs[a].dflt, 40); }
    fputs(")", d->out);
    break;
  case GW_FMT_PARAM: fprintf(d->out, "%-4u %s", a, param_name(d, B->endpoint, a)); break;
  case GW_FMT_ROOT: fprintf(d->out, "%-4u %s", a, gw_root_names[a]); break;
  case GW_FMT_CALL: fprintf(d->out, "%-4u %s", a, call_name(d, B->endpoint, a)); break;
  case GW_FMT_BLOCK: fprintf(d->out, "%-4u (lambda)", a); break;
  case GW_FMT_COUNT: fprintf(d->out, "%u", a); break;
  case GW_FMT_JUMP: snprintf(buf, sizeof buf, "+%u", a); fprintf(d->out, "%-4s -> %04u", buf, pc + 1 + a); break;
  case GW_FMT_FUNC: fprintf(d->out, "%s/%u", gw_fns[a & 0xFFFF].name, a >> 16); break;
  }
  (void)w;
  fprintf(d->out, "    ; line %u\n", line);
  if (O->fmt == GW_FMT_BLOCK) put_block(d, a, indent + 4);
}

static void put_block(D *d, uint32_t b, int indent) {
  const GwBlock *B = &d->p->blocks[b];
  fprintf(d->out, "%*sblock %u%s (stack %u):\n", indent, "", b, B->lambda ? " lambda" : "", B->max_stack);
  for (uint32_t pc = 0; pc < B->code_count; pc++) put_ins(d, B, pc, indent + 2);
}

static void put_code(D *d, const char *what, uint32_t b, int indent) {
  if (b == GW_NONE) return;
  const GwBlock *B = &d->p->blocks[b];
  fprintf(d->out, "%s: block %u (stack %u)\n", what, b, B->max_stack);
  for (uint32_t pc = 0; pc < B->code_count; pc++) put_ins(d, B, pc, indent + 2);
}

static void put_deps(D *d, uint32_t ep, uint32_t first, uint32_t count) {
  if (!count) { fputs("-", d->out); return; }
  for (uint32_t i = 0; i < count; i++)
    fprintf(d->out, "%s%s", i ? ", " : "", call_name(d, ep, d->p->deps[first + i].call));
}

static void put_reads(D *d, const GwCall *c) {
  if (!c->read_count) { fputs("(nothing)", d->out); return; }
  for (uint32_t i = 0; i < c->read_count; i++) {
    const GwRead *r = &d->p->reads[c->read_first + i];
    if (i) fputs(", ", d->out);
    if (!r->step_count) { fputs("(whole value)", d->out); continue; }
    for (uint32_t s = 0; s < r->step_count; s++) {
      const GwStep *st = &d->p->steps[r->step_first + s];
      if (st->kind == GW_STEP_FIELD) fprintf(d->out, "%s%s", s ? "." : "", cstr(d, st->arg));
      else if (st->kind == GW_STEP_INDEX) fprintf(d->out, "[%d]", (int32_t)st->arg);
      else fputs("[*]", d->out);
    }
  }
}

static void put_endpoint(D *d, uint32_t e) {
  const GwProgram *p = d->p;
  const GwEndpoint *E = &p->endpoints[e];
  fprintf(d->out, "\nendpoint %u: %s ", e, gw_method_names[E->method]);
  put_route(d, E->seg_first, E->seg_count);
  fprintf(d->out, "  (%s:%u)\n", cstr(d, p->files[E->file].path), E->line);
  if (E->auth_none) fputs("  auth none\n", d->out);
  else if (E->auth_count) {
    fputs("  auth ", d->out);
    for (uint32_t i = 0; i < E->auth_count; i++)
      fprintf(d->out, "%s%s", i ? " or " : "", cstr(d, p->auths[p->authrefs[E->auth_first + i].auth].name));
    fputc('\n', d->out);
  }
  if (E->limit_count) {
    fputs("  limit", d->out);
    for (uint32_t i = 0; i < E->limit_count; i++)
      fprintf(d->out, " %s", cstr(d, p->limits[p->limitrefs[E->limit_first + i].limit].name));
    fputc('\n', d->out);
  }
  if (E->cors != GW_NONE) fprintf(d->out, "  cors %s\n", cstr(d, p->corses[E->cors].name));
  fputs("  timeout ", d->out); put_ms(d, E->timeout_ms); fputc('\n', d->out);
  if (E->cache_ms) { fputs("  cache ", d->out); put_ms(d, E->cache_ms); fprintf(d->out, " (%u key expressions)\n", E->cacheby_count); }
  if (E->input_count) {
    fputs("  inputs:", d->out);
    for (uint32_t i = 0; i < E->input_count; i++) {
      const GwInput *in = &p->inputs[E->input_first + i];
      fprintf(d->out, " %s%s%s", gw_root_names[in->root], in->name == GW_NONE ? "" : ".", in->name == GW_NONE ? "" : cstr(d, in->name));
    }
    fputc('\n', d->out);
  }
  static const char *const modes[] = { "required", "optional", "default" };
  for (uint32_t i = 0; i < E->call_count; i++) {
    const GwCall *c = &p->calls[E->call_first + i];
    fprintf(d->out, "  call %u %s = %s %s  (line %u) %s", i, cstr(d, c->name), cstr(d, p->backends[c->backend].name),
            gw_method_names[c->method], c->line, modes[c->mode]);
    if (c->timeout_ms != GW_NONE) { fputs(" timeout ", d->out); put_ms(d, c->timeout_ms); }
    if (c->cache_ms) { fputs(" cache ", d->out); put_ms(d, c->cache_ms); }
    fputs("\n    after: ", d->out); put_deps(d, e, c->dep_first, c->dep_count);
    fputs("\n    reads: ", d->out); put_reads(d, c);
    fputc('\n', d->out);
    put_code(d, "    url", c->url, 4);
    put_code(d, "    query", c->query, 4);
    put_code(d, "    headers", c->headers, 4);
    put_code(d, "    body", c->body, 4);
    put_code(d, "    if", c->cond, 4);
    put_code(d, "    default", c->dflt, 4);
  }
  for (uint32_t i = 0; i < E->guard_count; i++) {
    const GwGuard *g = &p->guards[E->guard_first + i];
    fprintf(d->out, "  fail %u  (line %u)\n    after: ", g->status, g->line);
    put_deps(d, e, g->dep_first, g->dep_count);
    fputc('\n', d->out);
    put_code(d, "    if", g->cond, 4);
    put_code(d, "    body", g->body, 4);
  }
  if (E->proxy != GW_NONE) {
    fprintf(d->out, "  proxy %s\n", cstr(d, p->backends[E->proxy].name));
    put_code(d, "    url", E->proxy_url, 4);
  } else {
    fprintf(d->out, "  respond %u\n    after: ", E->status);
    put_deps(d, e, E->rdep_first, E->rdep_count);
    fputc('\n', d->out);
    put_code(d, "    body", E->respond, 4);
  }
  for (uint32_t i = 0; i < E->header_count; i++) {
    const GwRHeader *h = &p->rheaders[E->header_first + i];
    fprintf(d->out, "  header %s\n", cstr(d, h->name));
    put_code(d, "    value", h->value, 4);
  }
  for (uint32_t i = 0; i < E->cacheby_count; i++) put_code(d, "  cache key", p->blockrefs[E->cacheby_first + i].block, 2);
}

void gwc_routes(const GwProgram *p, FILE *out) {
  D d = { p, out, "" };
  for (uint32_t i = 0; i < p->n_routes; i++) {
    const GwRoute *r = &p->routes[i];
    const GwEndpoint *E = &p->endpoints[r->endpoint];
    fprintf(out, "%-7s ", gw_method_names[r->method]);
    put_route(&d, r->seg_first, r->seg_count);
    fprintf(out, "  %s:%u", cstr(&d, p->files[E->file].path), E->line);
    if (E->proxy != GW_NONE) fprintf(out, "  proxy %s", cstr(&d, p->backends[E->proxy].name));
    fputc('\n', out);
  }
}

void gwc_dump(const GwProgram *p, FILE *out) {
  D d = { p, out, "" };
  if (!getcwd(d.cwd, sizeof d.cwd)) d.cwd[0] = 0;
  fprintf(out, "; gw program, format %u, sha256 ", GW_FORMAT_VERSION);
  for (int i = 0; i < 8; i++) fprintf(out, "%02x", p->sha256[i]);
  fprintf(out, "…\n; %u constants, %u blocks, %u instructions, %u endpoints\n",
          p->n_consts, p->n_blocks, p->n_code, p->n_endpoints);
  for (uint32_t i = 0; i < p->n_envs; i++) {
    fprintf(out, "env %u: %s", i, cstr(&d, p->envs[i].name));
    if (p->envs[i].dflt != GW_NONE) { fputs(" default ", out); put_str(&d, p->envs[i].dflt, 0); }
    fputc('\n', out);
  }
  for (uint32_t i = 0; i < p->n_servers; i++) {
    const GwServer *s = &p->servers[i];
    fputs("server:", out);
    for (uint32_t k = 0; k < s->listen_count; k++) {
      const GwListen *l = &p->listens[s->listen_first + k];
      fprintf(out, " listen %s%s", cstr(&d, l->addr), l->tls ? " tls" : "");
      for (uint32_t c = 0; c < l->cert_count; c++)
        fprintf(out, " [%s %s]", rel(&d, p->certs[l->cert_first + c].cert), rel(&d, p->certs[l->cert_first + c].key));
    }
    if (s->admin != GW_NONE) fprintf(out, " admin %s", cstr(&d, s->admin));
    if (s->redis != GW_NONE) fprintf(out, " redis %s", cstr(&d, s->redis));
    if (s->redis_env != GW_NONE) fprintf(out, " redis env(%s)", cstr(&d, p->envs[s->redis_env].name));
    fputc('\n', out);
  }
  for (uint32_t i = 0; i < p->n_backends; i++) {
    const GwBackend *b = &p->backends[i];
    fprintf(out, "backend %u: %s", i, cstr(&d, b->name));
    for (uint32_t k = 0; k < b->url_count; k++) {
      const GwUrl *u = &p->urls[b->url_first + k];
      if (u->str != GW_NONE) fprintf(out, " url %s", cstr(&d, u->str));
      else fprintf(out, " url env(%s)", cstr(&d, p->envs[u->env].name));
    }
    fprintf(out, " %s timeout ", b->balance ? "least_requests" : "round_robin");
    put_ms(&d, b->timeout_ms);
    fputs(" connect ", out); put_ms(&d, b->connect_timeout_ms);
    fprintf(out, " retries %u max_connections %u max_response %u", b->retries, b->max_connections, b->max_response);
    if (b->breaker) { fprintf(out, " breaker %u/", b->br_failures); put_ms(&d, b->br_window_ms); }
    if (b->health_path != GW_NONE) fprintf(out, " health %s", cstr(&d, b->health_path));
    if (b->tls_ca != GW_NONE) fprintf(out, " ca %s", rel(&d, b->tls_ca));
    fputc('\n', out);
    if (b->headers != GW_NONE) put_code(&d, "  headers", b->headers, 2);
  }
  for (uint32_t i = 0; i < p->n_auths; i++) {
    const GwAuth *a = &p->auths[i];
    fprintf(out, "auth %u: %s %s", i, cstr(&d, a->name), a->type ? "apikey" : "jwt");
    if (!a->type) {
      fputs(" algorithms", out);
      for (int k = 0; gw_jwt_algs[k]; k++) if (a->algs & (1u << k)) fprintf(out, " %s", gw_jwt_algs[k]);
    }
    if (a->key_file != GW_NONE) fprintf(out, " key %s", rel(&d, a->key_file));
    if (a->jwks_file != GW_NONE) fprintf(out, " jwks %s", rel(&d, a->jwks_file));
    if (a->jwks_url != GW_NONE) fprintf(out, " jwks %s", cstr(&d, a->jwks_url));
    if (a->keys_file != GW_NONE) fprintf(out, " keys %s", rel(&d, a->keys_file));
    static const char *const from[] = { "header", "cookie", "query" };
    fprintf(out, " from %s %s%s\n", from[a->from], cstr(&d, a->from_name), a->bearer ? " bearer" : "");
    if (a->require != GW_NONE) put_code(&d, "  require", a->require, 2);
  }
  for (uint32_t i = 0; i < p->n_limits; i++) {
    const GwLimit *l = &p->limits[i];
    fprintf(out, "limit %u: %s %u per ", i, cstr(&d, l->name), l->count);
    put_ms(&d, l->period_ms);
    fprintf(out, " burst %u store %s on_error %s%s\n", l->burst, l->store ? "redis" : "local",
            l->on_error ? "deny" : "allow", l->by == GW_NONE ? " by client.ip" : "");
    if (l->by != GW_NONE) put_code(&d, "  by", l->by, 2);
  }
  for (uint32_t i = 0; i < p->n_corses; i++) {
    const GwCors *c = &p->corses[i];
    fprintf(out, "cors %u: %s origins", i, cstr(&d, c->name));
    for (uint32_t k = 0; k < c->origins_count; k++) fprintf(out, " %s", cstr(&d, p->strlist[c->origins_first + k].str));
    fputc('\n', out);
  }
  fputs("routes:\n", out);
  for (uint32_t i = 0; i < p->n_routes; i++) {
    fputs("  ", out);
    const GwRoute *r = &p->routes[i];
    fprintf(out, "%-7s ", gw_method_names[r->method]);
    put_route(&d, r->seg_first, r->seg_count);
    fprintf(out, "  -> endpoint %u\n", r->endpoint);
  }
  for (uint32_t e = 0; e < p->n_endpoints; e++) put_endpoint(&d, e);
}
