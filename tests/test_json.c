/*
** test_json.c — unit tests of gwr_json.c: path-selective extraction,
** whole-document parsing and generation.
**
**   build/test_json        (from the repository root, no arguments)
**
** Golden cases (input, read paths, expected compact output) are each run
** fed whole, in every chunk size from 1 to 31 bytes and split in two at
** every position; all must give the same text. Invalid inputs must fail the
** same way in every split. A 5 MB body read for two fields must cost the
** arena far less than the body. Ends with "N passed, N failed".
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gw_bytecode.h"
#include "gw_util.h"
#include "gwr_json.h"
#include "gwr_value.h"

static int passed, failed;

static void ok(const char *name) { passed++; printf("ok   %s\n", name); }
static void bad(const char *name, const char *why) { failed++; printf("FAIL %s: %s\n", name, why); }

static void buf_sink(void *ctx, const char *p, size_t n) { gw_buf_add(ctx, p, n); }

/* Compact text of v, or "WRITE-ERROR". Owned by the caller. */
static char *to_text(const GwValue *v) {
  GwBuf b = {0};
  if (gwr_json_write(v, buf_sink, &b)) { gw_buf_free(&b); return strdup("WRITE-ERROR"); }
  char *s = strdup(gw_buf_cstr(&b));
  gw_buf_free(&b);
  return s;
}

/* Extract in, fed in pieces of `chunk` bytes (0: whole) or, when split is
** not (size_t)-1, as two pieces cut at split. Returns the compact output
** or "ERROR: reason" (owned by the caller). */
static char *extract(const GwrPaths *paths, const GwrJsonLimits *lim, const char *in, size_t n,
                     size_t chunk, size_t split) {
  GwArena a;
  gw_arena_init(&a);
  GwrExtract *x = gwr_extract_new(&a, paths, lim);
  int rc = 0;
  if (split != (size_t)-1) {
    rc = gwr_extract_feed(x, in, split);
    if (!rc) rc = gwr_extract_feed(x, in + split, n - split);
  } else {
    size_t step = chunk ? chunk : (n ? n : 1);
    for (size_t i = 0; i < n && !rc; i += step)
      rc = gwr_extract_feed(x, in + i, n - i < step ? n - i : step);
  }
  GwValue *v = NULL;
  if (!rc) rc = gwr_extract_finish(x, &v);
  char *out;
  if (rc) {
    const char *e = gwr_extract_error(x);
    out = malloc(strlen(e) + 8);
    sprintf(out, "ERROR: %s", e);
  } else {
    out = to_text(v);
  }
  gwr_extract_free(x);
  gw_arena_free(&a);
  return out;
}

/* ---- golden cases ---------------------------------------------------------- */

typedef struct Case {
  const char *name;
  const char *in;
  int np;                   /* -1: gwr_paths_whole */
  const char *paths[6];
  const char *want;
} Case;

static const Case cases[] = {
  { "whole document", "{\"a\": [1, 2.50, {\"b\": null}], \"c\": true, \"d\": false}", -1, {0},
    "{\"a\":[1,2.50,{\"b\":null}],\"c\":true,\"d\":false}" },
  { "two fields", "{\"user\":{\"id\":7,\"name\":\"Ann\",\"tags\":[\"x\"]},\"orders\":[{\"total\":1.10,\"id\":1},"
    "{\"total\":2,\"id\":2}],\"junk\":{\"deep\":[1,[2,{\"q\":3}]]}}", 2, { "user.id", "orders[*].total" },
    "{\"user\":{\"id\":7},\"orders\":[{\"total\":1.10},{\"total\":2}]}" },
  { "field step applies to elements", "{\"user\":{\"id\":7},\"orders\":[{\"total\":1.10,\"id\":1},{\"total\":2,\"id\":2}]}",
    1, { "orders.total" }, "{\"orders\":[{\"total\":1.10},{\"total\":2}]}" },
  { "field step through nested arrays", "{\"m\":[[{\"id\":1,\"z\":0}],[{\"id\":2},5]],\"n\":1}", 1, { "m.id" },
    "{\"m\":[[{\"id\":1}],[{\"id\":2},5]]}" },
  { "union: every element and one field", "{\"items\":[{\"id\":1,\"x\":2},{\"id\":3,\"x\":[4]}],\"y\":0}", 2,
    { "items[*]", "items[0].id" }, "{\"items\":[{\"id\":1,\"x\":2},{\"id\":3,\"x\":[4]}]}" },
  { "union: two fields of the same object", "{\"u\":{\"a\":1,\"b\":2,\"c\":3}}", 2, { "u.a", "u.c" },
    "{\"u\":{\"a\":1,\"c\":3}}" },
  { "union: whole wins over deeper path", "{\"u\":{\"a\":1,\"b\":{\"c\":2}},\"v\":1}", 2, { "u.b.c", "u" },
    "{\"u\":{\"a\":1,\"b\":{\"c\":2}}}" },
  { "index steps keep positions as null", "{\"a\":[10,{\"b\":1,\"c\":2},30,40,50,60]}", 2, { "a[1].b", "a[3]" },
    "{\"a\":[null,{\"b\":1},null,40]}" },
  { "index and field step together", "{\"a\":[{\"id\":1,\"n\":\"x\"},{\"id\":2,\"n\":\"y\"},{\"id\":3}]}", 2,
    { "a[1]", "a.id" }, "{\"a\":[{\"id\":1},{\"id\":2,\"n\":\"y\"},{\"id\":3}]}" },
  { "index past the end", "{\"a\":[1,2]}", 1, { "a[5]" }, "{\"a\":[null,null]}" },
  { "index into containers skipped", "[[1,[2]],{\"x\":1},3,[4]]", 1, { "[2]" }, "[null,null,3]" },
  { "top-level index", "[5,6,7]", 1, { "[1]" }, "[null,6]" },
  { "no read paths", "{\"a\":1,\"b\":[1,2,{\"c\":\"d\"}]}", 0, {0}, "null" },
  { "empty path is the whole body", "[1,{\"a\":\"b\"}]", 1, { "" }, "[1,{\"a\":\"b\"}]" },
  { "path not present", "{\"a\":1}", 1, { "b.c" }, "{}" },
  { "scalar where a path goes on", "{\"user\":\"none\",\"x\":1}", 1, { "user.id" }, "{\"user\":\"none\"}" },
  { "object where an index goes on", "{\"a\":{\"0\":1}}", 1, { "a[0]" }, "{\"a\":{}}" },
  { "every element of an object", "{\"o\":{\"a\":{\"x\":1,\"y\":2},\"b\":{\"x\":3},\"c\":4}}", 1, { "o[*].x" },
    "{\"o\":{\"a\":{\"x\":1},\"b\":{\"x\":3},\"c\":4}}" },
  { "top-level scalar kept", "  42  ", 1, { "a" }, "42" },
  { "top-level scalar, no paths", "  \"s\"  ", 0, {0}, "null" },
  { "numbers byte-identical", "[12345678901234567890, 0.10, 1e400, -0, 1E+2, -1.5e-10, 0, 100000000000000000000000000000.000]",
    -1, {0}, "[12345678901234567890,0.10,1e400,-0,1E+2,-1.5e-10,0,100000000000000000000000000000.000]" },
  { "numbers byte-identical, selected", "{\"a\":{\"p\":9007199254740993,\"q\":1.0},\"b\":2}", 1, { "a.p" },
    "{\"a\":{\"p\":9007199254740993}}" },
  { "unicode escapes", "[\"\\u00e9\\u4E2D\\ud83d\\ude00\", \"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\", \"\\u0041\\u0000b\"]", -1, {0},
    "[\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\",\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\",\"A\\u0000b\"]" },
  { "escapes re-encoded", "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f </script>\"]", -1, {0},
    "[\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001F </script>\"]" },
  { "lone surrogate escapes (yajl writes '?' for a high one)", "[\"\\ud800\", \"a\\ud800b\"]", -1, {0}, "[\"?\",\"a?b\"]" },
  { "escaped key matches a path", "{\"a\\u0062\":1,\"x\":2}", 1, { "ab" }, "{\"ab\":1}" },
  { "unicode key matches a path", "{\"caf\\u00e9\":{\"n\":1,\"m\":2}}", 1, { "caf\xc3\xa9.n" },
    "{\"caf\xc3\xa9\":{\"n\":1}}" },
  { "empty object and array", "{\"a\":{},\"b\":[],\"c\":[{}],\"d\":[[]]}", -1, {0}, "{\"a\":{},\"b\":[],\"c\":[{}],\"d\":[[]]}" },
  { "empty object and array, selected", "{\"a\":{},\"b\":[],\"c\":[{}],\"d\":[[]]}", 4, { "a.x", "b[*]", "c[0].y", "d[0][0]" },
    "{\"a\":{},\"b\":[],\"c\":[{}],\"d\":[[]]}" },
  { "duplicate keys: later wins", "{\"a\":1,\"b\":2,\"a\":{\"x\":3}}", -1, {0}, "{\"a\":{\"x\":3},\"b\":2}" },
  { "duplicate keys, selected", "{\"a\":{\"x\":1,\"y\":1},\"b\":2,\"a\":{\"x\":3,\"y\":3}}", 1, { "a.x" }, "{\"a\":{\"x\":3}}" },
  { "duplicate keys in a large object",
    "{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"k10\":10,"
    "\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":16,\"k17\":17,\"k3\":\"x\",\"k18\":18,\"k17\":\"y\"}", -1, {0},
    "{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":\"x\",\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"k10\":10,"
    "\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":16,\"k17\":\"y\",\"k18\":18}" },
  { "whitespace everywhere", " \n\t{ \"a\" : [ 1 , 2 ] ,\r\n \"b\" : null } \n ", -1, {0}, "{\"a\":[1,2],\"b\":null}" },
  { "true false null selected", "{\"t\":true,\"f\":false,\"n\":null,\"z\":true}", 3, { "t", "f", "n" },
    "{\"t\":true,\"f\":false,\"n\":null}" },
  { "long string across chunks", "{\"s\":\"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\",\"t\":\"skipped skipped skipped\"}",
    1, { "s" }, "{\"s\":\"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\"}" },
};

static void test_golden(void) {
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const Case *k = &cases[c];
    GwArena pa;
    gw_arena_init(&pa);
    GwrPaths *paths = k->np < 0 ? gwr_paths_whole(&pa) : gwr_paths_from_strings(&pa, k->paths, k->np);
    size_t n = strlen(k->in);
    char *got = extract(paths, NULL, k->in, n, 0, (size_t)-1);
    char why[2048];
    if (strcmp(got, k->want)) {
      snprintf(why, sizeof why, "got %s\n  want %s", got, k->want);
      bad(k->name, why);
      free(got);
      gw_arena_free(&pa);
      continue;
    }
    free(got);
    ok(k->name);
    /* every chunk size and every split */
    int diffs = 0;
    for (size_t cs = 1; cs <= 31 && !diffs; cs++) {
      char *g = extract(paths, NULL, k->in, n, cs, (size_t)-1);
      if (strcmp(g, k->want)) {
        snprintf(why, sizeof why, "chunk size %zu: got %s", cs, g);
        diffs++;
      }
      free(g);
    }
    for (size_t s = 0; s <= n && !diffs; s++) {
      char *g = extract(paths, NULL, k->in, n, 0, s);
      if (strcmp(g, k->want)) {
        snprintf(why, sizeof why, "split at %zu: got %s", s, g);
        diffs++;
      }
      free(g);
    }
    char name[256];
    snprintf(name, sizeof name, "%s (chunks 1..31, every split)", k->name);
    if (diffs) bad(name, why); else ok(name);
    gw_arena_free(&pa);
  }
}

/* ---- read paths from a program ------------------------------------------- */

static void test_program_paths(void) {
  /* paths: items.total, user.id, items[-1].id (every element), and a second
  ** call with no reads and a third reading the whole body */
  static const char blob[] = "itemstotaluserid";
  GwConst consts[] = { { 0, 0, 5 }, { 0, 5, 5 }, { 0, 10, 4 }, { 0, 14, 2 } };
  GwStep steps[] = {
    { GW_STEP_FIELD, 0 }, { GW_STEP_FIELD, 1 },
    { GW_STEP_FIELD, 2 }, { GW_STEP_FIELD, 3 },
    { GW_STEP_FIELD, 0 }, { GW_STEP_INDEX, (uint32_t)-1 }, { GW_STEP_FIELD, 3 },
    { GW_STEP_FIELD, 0 }, { GW_STEP_INDEX, 1 },
  };
  GwRead reads[] = { { 0, 2 }, { 2, 2 }, { 4, 3 }, { 0, 0 }, { 7, 2 } };
  GwProgram p;
  memset(&p, 0, sizeof p);
  p.consts = consts; p.n_consts = 4;
  p.steps = steps; p.n_steps = sizeof steps / sizeof steps[0];
  p.reads = reads; p.n_reads = sizeof reads / sizeof reads[0];
  p.blob = (unsigned char *)blob; p.n_blob = sizeof blob - 1;
  GwCall c1, c2, c3, c4;
  memset(&c1, 0, sizeof c1);
  c2 = c3 = c4 = c1;
  c1.read_first = 0; c1.read_count = 3;
  c2.read_first = 0; c2.read_count = 0;
  c3.read_first = 3; c3.read_count = 1;
  c4.read_first = 4; c4.read_count = 1;
  const char *in = "{\"user\":{\"id\":1,\"name\":\"n\"},\"items\":[{\"id\":2,\"total\":3.0,\"x\":1},{\"total\":4}],\"z\":0}";
  GwArena pa;
  gw_arena_init(&pa);
  struct { const GwCall *c; const char *want; const char *name; } t[] = {
    { &c1, "{\"user\":{\"id\":1},\"items\":[{\"id\":2,\"total\":3.0},{\"total\":4}]}", "program paths: fields, negative index" },
    { &c2, "null", "program paths: no reads keep nothing" },
    { &c3, "{\"user\":{\"id\":1,\"name\":\"n\"},\"items\":[{\"id\":2,\"total\":3.0,\"x\":1},{\"total\":4}],\"z\":0}",
      "program paths: empty step list is the whole body" },
    { &c4, "{\"items\":[null,{\"total\":4}]}", "program paths: index step" },
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    GwrPaths *ps = gwr_paths_build(&pa, &p, t[i].c);
    char *got = extract(ps, NULL, in, strlen(in), 7, (size_t)-1);
    if (!strcmp(got, t[i].want)) ok(t[i].name);
    else { char why[1024]; snprintf(why, sizeof why, "got %s", got); bad(t[i].name, why); }
    free(got);
  }
  const char *badp[] = { "a[", "a[x]", "a..b", "a[1" };
  int nulls = 0;
  for (int i = 0; i < 4; i++) nulls += gwr_paths_from_strings(&pa, &badp[i], 1) == NULL;
  if (nulls == 4) ok("malformed path strings refused"); else bad("malformed path strings refused", "accepted");
  gw_arena_free(&pa);
}

/* ---- invalid inputs ------------------------------------------------------- */

static char *nest(int depth, const char *open, const char *mid, const char *close) {
  GwBuf b = {0};
  for (int i = 0; i < depth; i++) gw_buf_adds(&b, open);
  gw_buf_adds(&b, mid);
  for (int i = 0; i < depth; i++) gw_buf_adds(&b, close);
  char *s = strdup(gw_buf_cstr(&b));
  gw_buf_free(&b);
  return s;
}

/* in must fail with every path set, in every chunk size and split, with an
** error containing want (if not NULL) and never the word "secret". */
/* kept_only: the input is refused only where its bad part is kept (strict
** UTF-8 beyond what yajl checks); with nothing kept it must be accepted. */
static void expect_invalid_x(const char *name, const char *in, size_t n, const char *want, int kept_only) {
  GwArena pa;
  gw_arena_init(&pa);
  const char *some[] = { "a.b", "x[0]" };
  const GwrPaths *sets[3] = { gwr_paths_whole(&pa), gwr_paths_from_strings(&pa, NULL, 0),
                              gwr_paths_from_strings(&pa, some, 2) };
  char why[512] = "";
  int bads = 0;
  if (kept_only) {
    char *g = extract(sets[1], NULL, in, n, 0, (size_t)-1);
    if (!strncmp(g, "ERROR: ", 7)) { snprintf(why, sizeof why, "refused with nothing kept: %.200s", g); bads++; }
    free(g);
  }
  for (int s = 0; s < (kept_only ? 1 : 3) && !bads; s++) {
    for (size_t cs = 0; cs <= 31 + n && !bads; cs++) {
      /* cs 0..31: chunk sizes (0 = whole); beyond: split at cs - 32 */
      if (cs > 31 && cs - 32 > n) break;
      char *g = cs <= 31 ? extract(sets[s], NULL, in, n, cs, (size_t)-1)
                         : extract(sets[s], NULL, in, n, 0, cs - 32);
      if (strncmp(g, "ERROR: ", 7)) {
        snprintf(why, sizeof why, "path set %d, %s %zu: accepted as %.200s", s, cs <= 31 ? "chunk" : "split",
                 cs <= 31 ? cs : cs - 32, g);
        bads++;
      } else if (want && !strstr(g, want)) {
        snprintf(why, sizeof why, "error %s, want %s", g, want);
        bads++;
      } else if (strstr(g, "secret")) {
        snprintf(why, sizeof why, "error shows body content: %s", g);
        bads++;
      }
      free(g);
    }
  }
  if (bads) bad(name, why); else ok(name);
  gw_arena_free(&pa);
}

static void expect_invalid(const char *name, const char *in, size_t n, const char *want) {
  expect_invalid_x(name, in, n, want, 0);
}

static void test_invalid(void) {
  static const struct { const char *name, *in, *want; } t[] = {
    { "truncated object", "{\"a\":1", "premature EOF" },
    { "truncated after colon", "{\"a\":", NULL },
    { "truncated array", "[1,2", NULL },
    { "truncated string", "\"abc", NULL },
    { "truncated literal", "tru", NULL },
    { "truncated number", "-", NULL },
    { "empty body", "", NULL },
    { "whitespace body", "  \n ", NULL },
    { "trailing garbage", "{} x", "trailing garbage" },
    { "two documents", "{}{}", NULL },
    { "two arrays", "[1] [2]", NULL },
    { "bare word", "hello", NULL },
    { "bare word True", "True", NULL },
    { "NaN", "[NaN]", NULL },
    { "Infinity", "[Infinity]", NULL },
    { "leading zero", "[01]", NULL },
    { "leading zero top-level", "01", NULL },
    { "dot without digits", "[1.]", NULL },
    { "leading dot", "[.5]", NULL },
    { "plus sign", "[+1]", NULL },
    { "trailing comma in array", "[1,]", NULL },
    { "trailing comma in object", "{\"a\":1,}", NULL },
    { "single quotes", "{'a':1}", NULL },
    { "comment", "/* c */ {}", NULL },
    { "unquoted key", "{a:1}", NULL },
    { "missing colon", "{\"a\" 1}", NULL },
    { "raw control character", "[\"a\x01" "b\"]", NULL },
    { "raw newline in string", "[\"a\nb\"]", NULL },
    { "bad escape", "[\"\\x\"]", NULL },
    { "short unicode escape", "[\"\\u12\"]", NULL },
    { "secret stays out of errors", "{\"secret\": tru}", NULL },
    { "invalid UTF-8 byte", "[\"\xff\"]", "UTF" },
    { "invalid UTF-8 truncated sequence", "[\"\xe4\xb8\"]", "UTF" },
    { "invalid UTF-8 in a key", "{\"\xff\":1}", "UTF" },
    { "invalid UTF-8 in a skipped value", "{\"zz\":[\"ok\",{\"q\":\"\xc3\"}]}", "UTF" },
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) expect_invalid(t[i].name, t[i].in, strlen(t[i].in), t[i].want);
  /* yajl lets these shapes through; they are refused where kept, and cost
  ** nothing where skipped */
  static const struct { const char *name, *in; } strict[] = {
    { "invalid UTF-8 overlong", "[\"\xc0\xaf\"]" },
    { "invalid UTF-8 overlong 3 bytes", "[\"\xe0\x80\xaf\"]" },
    { "invalid UTF-8 surrogate", "[\"\xed\xa0\x80\"]" },
    { "invalid UTF-8 past U+10FFFF", "[\"\xf4\x90\x80\x80\"]" },
    { "invalid UTF-8 F5 lead", "[\"\xf5\x80\x80\x80\"]" },
    { "invalid UTF-8 overlong key", "{\"\xc0\xaf\":1}" },
    { "lone low surrogate escape", "[\"\\udc00\"]" },
  };
  for (size_t i = 0; i < sizeof strict / sizeof strict[0]; i++)
    expect_invalid_x(strict[i].name, strict[i].in, strlen(strict[i].in), "UTF", 1);

  /* depth: 64 levels pass, 65 fail, whether the deep part is kept or skipped */
  GwArena pa;
  gw_arena_init(&pa);
  GwrPaths *whole = gwr_paths_whole(&pa), *none = gwr_paths_from_strings(&pa, NULL, 0);
  const char *ap[] = { "a" };
  GwrPaths *sel = gwr_paths_from_strings(&pa, ap, 1);
  char *d64 = nest(64, "[", "1", "]"), *d65 = nest(65, "[", "1", "]");
  char *o65 = nest(64, "{\"a\":", "[1]", "}"), *o64 = nest(63, "{\"b\":", "[1]", "}");
  GwrPaths *ps[3] = { whole, none, sel };
  int okd = 1;
  char why[512] = "";
  for (int s = 0; s < 3; s++) {
    char *g1 = extract(ps[s], NULL, d64, strlen(d64), 5, (size_t)-1);
    char *g2 = extract(ps[s], NULL, d65, strlen(d65), 5, (size_t)-1);
    char *g3 = extract(ps[s], NULL, o65, strlen(o65), 3, (size_t)-1);
    char *g4 = extract(ps[s], NULL, o64, strlen(o64), 0, (size_t)-1);
    if (!strncmp(g1, "ERROR", 5) || !strstr(g2, "too deep") || !strstr(g3, "too deep") || !strncmp(g4, "ERROR", 5)) {
      okd = 0;
      snprintf(why, sizeof why, "path set %d: 64: %.60s / 65: %.60s / obj 65: %.60s / obj 64: %.60s", s, g1, g2, g3, g4);
    }
    free(g1); free(g2); free(g3); free(g4);
  }
  if (okd) ok("depth 64 passes, 65 is too deep (kept, skipped, selected)"); else bad("depth limit", why);
  GwrJsonLimits lim = { 3 };
  char *g1 = extract(whole, &lim, "[[[1]]]", 7, 0, (size_t)-1);
  char *g2 = extract(whole, &lim, "[[[[1]]]]", 9, 0, (size_t)-1);
  if (!strcmp(g1, "[[[1]]]") && strstr(g2, "too deep")) ok("depth limit from GwrJsonLimits");
  else { snprintf(why, sizeof why, "%s / %s", g1, g2); bad("depth limit from GwrJsonLimits", why); }
  free(g1); free(g2);
  free(d64); free(d65); free(o65); free(o64);

  /* the error is sticky, and finishing twice fails */
  GwArena a;
  gw_arena_init(&a);
  GwrExtract *x = gwr_extract_new(&a, whole, NULL);
  int r1 = gwr_extract_feed(x, "[1,", 3), r2 = gwr_extract_feed(x, "}", 1), r3 = gwr_extract_feed(x, "2]", 2);
  GwValue *v;
  int r4 = gwr_extract_finish(x, &v);
  const char *e = gwr_extract_error(x);
  if (!r1 && r2 == -1 && r3 == -1 && r4 == -1 && v == &gwv_null && strstr(e, "invalid JSON near byte 4"))
    ok("errors are sticky and name the byte offset");
  else { snprintf(why, sizeof why, "%d %d %d %d %s", r1, r2, r3, r4, e); bad("errors are sticky", why); }
  gwr_extract_free(x);
  x = gwr_extract_new(&a, whole, NULL);
  r1 = gwr_extract_feed(x, "{}", 2);
  r2 = gwr_extract_finish(x, &v);
  r3 = gwr_extract_finish(x, &v);
  if (!r1 && !r2 && r3 == -1) ok("finishing twice fails"); else bad("finishing twice fails", "accepted");
  gwr_extract_free(x);
  gwr_extract_free(NULL);
  gw_arena_free(&a);
  gw_arena_free(&pa);
}

/* ---- memory: a big body read for two fields ------------------------------ */

static void big_body(GwBuf *b, size_t target) {
  gw_buf_adds(b, "{\"meta\":{\"id\":42,\"name\":\"big\",\"tags\":[\"a\",\"b\"]},\"items\":[");
  for (int i = 0; b->n < target; i++)
    gw_buf_printf(b, "%s{\"id\":%d,\"name\":\"item number %d with some padding text \\u00e9\",\"price\":12.50,"
                  "\"tags\":[\"a\",\"b\",\"c\"],\"nested\":{\"x\":[1,2,3],\"y\":\"zzz\",\"k%d\":null}}",
                  i ? "," : "", i, i, i % 100);
  gw_buf_adds(b, "],\"total\":123456789012345678901234567890}");
}

static void test_memory(void) {
  GwBuf body = {0};
  big_body(&body, 5u << 20);
  GwArena pa;
  gw_arena_init(&pa);
  struct { const char *name; const char *paths[2]; int np; const char *want; } t[] = {
    { "5 MB body, two fields", { "meta.id", "total" }, 2, "{\"meta\":{\"id\":42},\"total\":123456789012345678901234567890}" },
    { "5 MB body, one index", { "items[1].id" }, 1, "{\"items\":[null,{\"id\":1}]}" },
    { "5 MB body, no paths", { 0 }, 0, "null" },
  };
  for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
    GwrPaths *ps = gwr_paths_from_strings(&pa, t[k].paths, t[k].np);
    GwArena a;
    gw_arena_init(&a);
    gw_arena_alloc(&a, 16);     /* as a request would have: arena in use */
    size_t before = a.used;
    clock_t c0 = clock();
    GwrExtract *x = gwr_extract_new(&a, ps, NULL);
    int rc = 0;
    for (size_t i = 0; i < body.n && !rc; i += 16384)
      rc = gwr_extract_feed(x, body.p + i, body.n - i < 16384 ? body.n - i : 16384);
    GwValue *v = NULL;
    if (!rc) rc = gwr_extract_finish(x, &v);
    double ms = (double)(clock() - c0) * 1000.0 / CLOCKS_PER_SEC;
    size_t grew = a.used - before;
    char *got = rc ? strdup(gwr_extract_error(x)) : to_text(v);
    gwr_extract_free(x);
    char name[160], why[512];
    snprintf(name, sizeof name, "%s: arena grew %zu bytes for a %zu-byte body (%.0f ms)", t[k].name, grew, body.n, ms);
    if (rc || strcmp(got, t[k].want)) { snprintf(why, sizeof why, "got %.300s", got); bad(name, why); }
    else if (grew >= 64 * 1024) bad(name, "arena grew 64 KB or more");
    else ok(name);
    free(got);
    gw_arena_free(&a);
  }
  /* the same body kept whole parses and writes back identically */
  GwArena a;
  gw_arena_init(&a);
  GwValue *v;
  char err[128];
  int rc = gwr_json_parse(&a, body.p, body.n, NULL, &v, err, sizeof err);
  char *got = rc ? strdup(err) : to_text(v);
  /* the body has \u00e9, which comes back as the raw UTF-8 bytes */
  GwBuf want = {0};
  for (size_t i = 0; i < body.n; i++) {
    if (!strncmp(body.p + i, "\\u00e9", 6)) { gw_buf_adds(&want, "\xc3\xa9"); i += 5; }
    else gw_buf_addc(&want, body.p[i]);
  }
  if (!rc && !strcmp(got, gw_buf_cstr(&want))) ok("5 MB body parsed whole round-trips");
  else bad("5 MB body parsed whole round-trips", rc ? got : "output differs");
  free(got);
  gw_buf_free(&want);
  gw_arena_free(&a);
  gw_arena_free(&pa);
  gw_buf_free(&body);
}

/* ---- gwr_json_parse -------------------------------------------------------- */

static void parse_case(const char *name, const char *in, size_t n, const GwrJsonLimits *lim, const char *want) {
  GwArena a;
  gw_arena_init(&a);
  GwValue *v = NULL;
  char err[128] = "x";
  int rc = gwr_json_parse(&a, in, n, lim, &v, err, sizeof err);
  char *got;
  if (rc) { got = malloc(strlen(err) + 8); sprintf(got, "ERROR: %s", err); }
  else got = to_text(v);
  int good = want[0] == '~' ? (rc && strstr(got, want + 1) != NULL) : (!rc && !strcmp(got, want) && !err[0]);
  if (good) ok(name);
  else { char why[512]; snprintf(why, sizeof why, "got %.300s, want %s", got, want); bad(name, why); }
  free(got);
  gw_arena_free(&a);
}

static void test_parse(void) {
  parse_case("parse: empty body is null", "", 0, NULL, "null");
  parse_case("parse: whitespace body is null", " \r\n\t ", 5, NULL, "null");
  parse_case("parse: object", "{\"a\":1}", 7, NULL, "{\"a\":1}");
  parse_case("parse: scalar", " \"x\" ", 5, NULL, "\"x\"");
  parse_case("parse: numbers verbatim", "[0.10,1e400,12345678901234567890]", 33, NULL, "[0.10,1e400,12345678901234567890]");
  parse_case("parse: truncated", "[1,2", 4, NULL, "~premature EOF");
  parse_case("parse: trailing garbage", "{\"a\":1} x", 9, NULL, "~trailing garbage");
  parse_case("parse: embedded NUL", "{\"a\":1}\0", 8, NULL, "~invalid JSON");
  parse_case("parse: invalid UTF-8", "\"\xc3\x28\"", 4, NULL, "~UTF");
  char *d65 = nest(65, "[", "", "]"), *d64 = nest(64, "[", "", "]");
  char *w64 = nest(64, "[", "", "]");
  parse_case("parse: depth 65 is too deep", d65, strlen(d65), NULL, "~too deep");
  parse_case("parse: depth 64 is fine", d64, strlen(d64), NULL, w64);
  GwrJsonLimits lim = { 2 };
  parse_case("parse: depth limit 2", "{\"a\":{\"b\":[]}}", 14, &lim, "~too deep");
  parse_case("parse: depth limit 2 fine", "{\"a\":{\"b\":1}}", 13, &lim, "{\"a\":{\"b\":1}}");
  free(d65); free(d64); free(w64);
  /* hostile: many distinct keys in one object stay fast (keys are hashed) */
  GwBuf b = {0};
  gw_buf_addc(&b, '{');
  for (int i = 0; i < 200000; i++) gw_buf_printf(&b, "%s\"key%d\":%d", i ? "," : "", i, i);
  gw_buf_adds(&b, ",\"key7\":\"dup\"}");
  GwArena a;
  gw_arena_init(&a);
  GwValue *v;
  char err[128];
  clock_t c0 = clock();
  int rc = gwr_json_parse(&a, b.p, b.n, NULL, &v, err, sizeof err);
  double ms = (double)(clock() - c0) * 1000.0 / CLOCKS_PER_SEC;
  GwValue *k7 = rc ? NULL : gwv_get(v, "key7", 4);
  char name[128];
  snprintf(name, sizeof name, "parse: 200000 keys in one object, a duplicate (%.0f ms)", ms);
  if (!rc && v->n == 200000 && k7 && k7->type == GWV_STRING && ms < 5000) ok(name);
  else bad(name, rc ? err : "wrong result or slow");
  gw_arena_free(&a);
  gw_buf_free(&b);
}

/* ---- gwr_json_write --------------------------------------------------------- */

static void write_case(const char *name, const GwValue *v, const char *want) {
  char *got = to_text(v);
  if (!strcmp(got, want)) ok(name);
  else { char why[512]; snprintf(why, sizeof why, "got %s, want %s", got, want); bad(name, why); }
  free(got);
}

static void test_write(void) {
  GwArena a;
  gw_arena_init(&a);
  write_case("write: NULL is null", NULL, "null");
  write_case("write: escaping", gwv_string_copy(&a, "q\"b\\s/\x01\x1f\n\t</script>\xc3\xa9", 21),
             "\"q\\\"b\\\\s/\\u0001\\u001F\\n\\t</script>\xc3\xa9\"");
  write_case("write: embedded NUL", gwv_string_copy(&a, "a\0b", 3), "\"a\\u0000b\"");
  GwValue *arr = gwv_array(&a, 0);
  const char *nums[] = { "12345678901234567890", "0.10", "1e400", "-0", "1E+2" };
  for (int i = 0; i < 5; i++) gwv_append(&a, arr, gwv_number_text(&a, nums[i], strlen(nums[i]), 0));
  gwv_append(&a, arr, gwv_number(&a, 0.5));
  write_case("write: numbers verbatim", arr, "[12345678901234567890,0.10,1e400,-0,1E+2,0.5]");
  GwValue *o = gwv_object(&a, 0);
  gwv_set(&a, o, "z", 1, &gwv_true, 1);
  gwv_set(&a, o, "a", 1, &gwv_false, 1);
  gwv_set(&a, o, "k\"ey", 4, &gwv_null, 1);
  gwv_set(&a, o, "e", 1, gwv_object(&a, 0), 1);
  gwv_set(&a, o, "f", 1, gwv_array(&a, 0), 1);
  gwv_set(&a, o, "z", 1, arr, 1);
  write_case("write: objects in insertion order", o,
             "{\"z\":[12345678901234567890,0.10,1e400,-0,1E+2,0.5],\"a\":false,\"k\\\"ey\":null,\"e\":{},\"f\":[]}");
  GwBuf b = {0};
  int r1 = gwr_json_write(gwv_string_copy(&a, "\xff", 1), buf_sink, &b);
  GwValue *bk = gwv_object(&a, 0);
  gwv_set(&a, bk, "\xc0\xaf", 2, &gwv_null, 1);
  int r2 = gwr_json_write(bk, buf_sink, &b);
  if (r1 == -1 && r2 == -1) ok("write: invalid UTF-8 refused"); else bad("write: invalid UTF-8 refused", "written");
  GwValue *deep = gwv_array(&a, 0), *cur = deep;
  for (int i = 0; i < 300; i++) { GwValue *n = gwv_array(&a, 0); gwv_append(&a, cur, n); cur = n; }
  b.n = 0;
  if (gwr_json_write(deep, buf_sink, &b) == -1) ok("write: nesting past yajl_gen's limit refused");
  else bad("write: nesting past yajl_gen's limit refused", "written");
  gw_buf_free(&b);
  /* parse -> write round trip of a mixed document */
  const char *doc = "{\"a\":[1,-2.5e3,\"x\\ty\",{\"b\":[true,false,null]}],\"\xc3\xa9\":{}}";
  GwValue *v;
  char err[64];
  if (!gwr_json_parse(&a, doc, strlen(doc), NULL, &v, err, sizeof err)) write_case("write: round trip", v, doc);
  else bad("write: round trip", err);
  gw_arena_free(&a);
}

int main(void) {
  test_golden();
  test_program_paths();
  test_invalid();
  test_memory();
  test_parse();
  test_write();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
