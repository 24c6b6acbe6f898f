/*
** test_program.c — unit tests of the .gwb reader/verifier (gw_program.c).
**
**   build/test_program SMALL.gw
**
** Compiles SMALL.gw in process (gwc_compile_paths), checks that the image
** loads and round-trips through gw_program_write byte for byte, then builds
** hostile images from it and checks each is refused with the expected
** message: raw header and section-table damage (with the SHA-256 fixed up
** so the checks behind the checksum run), and record-level damage made by
** loading the program, patching its arrays and writing it back, which is
** the verifier's job to catch. Ends with "N passed, N failed".
**
** The program must have: endpoint 0 with calls 0 (user) and 1 (orders,
** reading user), a FIELD instruction, a JNOTNULL, a number constant.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gwc.h"
#include "gw_parse.h"
#include "gw_bytecode.h"
#include "gw_util.h"

static int passed, failed;
static unsigned char *valid;
static size_t nvalid;

static void ok(const char *name) { passed++; printf("ok   %s\n", name); }
static void bad(const char *name, const char *why) { failed++; printf("FAIL %s: %s\n", name, why); }

static void fix_sha(unsigned char *img, size_t n) {
  gw_sha256(img + GW_HEADER_SIZE, n - GW_HEADER_SIZE, img + 16);
}

/* Loading img must fail with a message containing want. */
static void expect_refused(const char *name, const unsigned char *img, size_t n, const char *want) {
  char err[256] = "";
  GwProgram *p = gw_program_load(img, n, err, sizeof err);
  char why[400];
  if (p) {
    gw_program_free(p);
    snprintf(why, sizeof why, "loaded, expected a refusal with '%s'", want);
    bad(name, why);
  } else if (!strstr(err, want)) {
    snprintf(why, sizeof why, "refused with '%s', expected '%s'", err, want);
    bad(name, why);
  } else if (strchr(err, '\n')) {
    snprintf(why, sizeof why, "message is not one line: '%s'", err);
    bad(name, why);
  } else {
    ok(name);
  }
}

static unsigned char *copy_valid(void) {
  unsigned char *c = malloc(nvalid);
  if (!c) abort();
  memcpy(c, valid, nvalid);
  return c;
}

static GwProgram *load_valid(void) {
  char err[256];
  GwProgram *p = gw_program_load(valid, nvalid, err, sizeof err);
  if (!p) { fprintf(stderr, "the valid image does not load: %s\n", err); exit(1); }
  return p;
}

/* Find the section-table entry of section id; -1 if absent. */
static int table_entry(const unsigned char *img, uint32_t id) {
  uint32_t nsec = gw_get_u32(img + 12);
  for (uint32_t s = 0; s < nsec; s++)
    if (gw_get_u32(img + GW_HEADER_SIZE + 12 * s) == id) return (int)s;
  return -1;
}

/* ---- patches of the loaded program (the verifier must catch them) ---------- */

typedef int (*Patch)(GwProgram *p);   /* 0: applied; -1: nothing to patch */

/* The index (into p->code) of the first instruction with opcode op. */
static long find_op(const GwProgram *p, uint32_t op) {
  for (uint32_t i = 0; i < p->n_code; i++) if (GW_INS_OP(p->code[i].ins) == op) return (long)i;
  return -1;
}

static int p_jump_out(GwProgram *p) {
  long i = find_op(p, GW_OP_JNOTNULL);
  if (i < 0) return -1;
  p->code[i].ins = GW_INS(GW_OP_JNOTNULL, 1000);
  return 0;
}
static int p_jump_to_end(GwProgram *p) {     /* exactly one past the block's end */
  for (uint32_t b = 0; b < p->n_blocks; b++) {
    const GwBlock *B = &p->blocks[b];
    for (uint32_t pc = 0; pc < B->code_count; pc++)
      if (GW_INS_OP(p->code[B->code_first + pc].ins) == GW_OP_JNOTNULL) {
        p->code[B->code_first + pc].ins = GW_INS(GW_OP_JNOTNULL, B->code_count - pc - 1);
        return 0;
      }
  }
  return -1;
}
static int p_underflow(GwProgram *p) {
  if (!p->n_blocks) return -1;
  p->code[p->blocks[0].code_first].ins = GW_INS(GW_OP_ADD, 0);
  return 0;
}
static int p_const_range(GwProgram *p) {
  long i = find_op(p, GW_OP_CONST);
  if (i < 0) return -1;
  p->code[i].ins = GW_INS(GW_OP_CONST, p->n_consts);
  return 0;
}
static int p_field_number(GwProgram *p) {
  long i = find_op(p, GW_OP_FIELD);
  for (uint32_t k = 0; i >= 0 && k < p->n_consts; k++)
    if (p->consts[k].kind == 1) { p->code[i].ins = GW_INS(GW_OP_FIELD, k); return 0; }
  return -1;
}
static int p_cycle(GwProgram *p) {
  if (!p->n_endpoints || p->endpoints[0].call_count < 2) return -1;
  GwCall *c0 = &p->calls[p->endpoints[0].call_first];
  GwCall *c1 = c0 + 1;
  /* call 1 already depends on call 0; make call 0 depend on call 1 */
  int found = 0;
  for (uint32_t k = 0; k < c1->dep_count; k++) if (p->deps[c1->dep_first + k].call == 0) found = 1;
  if (!found) return -1;
  GwDep *d = realloc(p->deps, (p->n_deps + 1) * sizeof *d);
  if (!d) abort();
  p->deps = d;
  p->deps[p->n_deps].call = 1;
  c0->dep_first = p->n_deps++;
  c0->dep_count = 1;
  return 0;
}
static int p_self_dep(GwProgram *p) {      /* call 0 depends on itself */
  if (!p->n_endpoints || p->endpoints[0].call_count < 1) return -1;
  GwDep *d = realloc(p->deps, (p->n_deps + 1) * sizeof *d);
  if (!d) abort();
  p->deps = d;
  p->deps[p->n_deps].call = 0;
  GwCall *c0 = &p->calls[p->endpoints[0].call_first];
  c0->dep_first = p->n_deps++;
  c0->dep_count = 1;
  return 0;
}
static int p_missing_dep(GwProgram *p) {   /* call 1 reads call 0 without depending on it */
  if (!p->n_endpoints || p->endpoints[0].call_count < 2) return -1;
  GwCall *c1 = &p->calls[p->endpoints[0].call_first + 1];
  if (!c1->dep_count) return -1;
  c1->dep_count = 0;
  return 0;
}
static int p_block_range(GwProgram *p) {
  if (!p->n_calls) return -1;
  p->calls[0].url = p->n_blocks;
  return 0;
}
static int p_code_range(GwProgram *p) {
  if (!p->n_blocks) return -1;
  p->blocks[p->n_blocks - 1].code_count = p->n_code;   /* runs past the code */
  return 0;
}
static int p_bad_opcode(GwProgram *p) {
  if (!p->n_blocks) return -1;
  p->code[p->blocks[0].code_first].ins = GW_INS(GW_OP_MAX, 0);
  return 0;
}
static int p_no_return(GwProgram *p) {
  if (!p->n_blocks) return -1;
  const GwBlock *B = &p->blocks[0];
  p->code[B->code_first + B->code_count - 1].ins = GW_INS(GW_OP_NULL, 0);
  return 0;
}
static int p_cur_outside(GwProgram *p) {
  for (uint32_t b = 0; b < p->n_blocks; b++)
    if (!p->blocks[b].lambda) {
      /* a non-lambda block whose first instruction pushes one value */
      uint32_t op = GW_INS_OP(p->code[p->blocks[b].code_first].ins);
      if (gw_ops[op].pops == 0 && gw_ops[op].pushes == 1) {
        p->code[p->blocks[b].code_first].ins = GW_INS(GW_OP_CUR, 0);
        return 0;
      }
    }
  return -1;
}
static int p_lambda_backwards(GwProgram *p) {
  long i = find_op(p, GW_OP_FILTER);
  if (i < 0) return -1;
  p->code[i].ins = GW_INS(GW_OP_FILTER, 0);
  return 0;
}
static int p_param_range(GwProgram *p) {
  long i = find_op(p, GW_OP_PARAM);
  if (i < 0) return -1;
  p->code[i].ins = GW_INS(GW_OP_PARAM, 7);
  return 0;
}
static int p_bad_utf8(GwProgram *p) {
  for (uint32_t k = 0; k < p->n_consts; k++)
    if (p->consts[k].kind == 0 && p->consts[k].len > 0) { p->blob[p->consts[k].off] = 0xFF; return 0; }
  return -1;
}
static int p_bad_number(GwProgram *p) {
  for (uint32_t k = 0; k < p->n_consts; k++)
    if (p->consts[k].kind == 1 && p->consts[k].len > 0) { p->blob[p->consts[k].off] = 'x'; return 0; }
  return -1;
}
static int p_const_outside_blob(GwProgram *p) {
  if (!p->n_consts) return -1;
  p->consts[p->n_consts - 1].len = p->n_blob + 1;
  return 0;
}
static int p_bad_status(GwProgram *p) {
  if (!p->n_endpoints) return -1;
  p->endpoints[0].status = 99;
  return 0;
}
static int p_param_count(GwProgram *p) {
  if (!p->n_endpoints) return -1;
  p->endpoints[0].param_count++;
  return 0;
}
static int p_route_range(GwProgram *p) {
  if (!p->n_routes) return -1;
  p->routes[0].endpoint = p->n_endpoints;
  return 0;
}
static int p_lines(GwProgram *p) {
  if (!p->n_lines) return -1;
  p->n_lines--;
  return 0;
}
static int p_max_stack(GwProgram *p) {
  for (uint32_t b = 0; b < p->n_blocks; b++)
    if (p->blocks[b].max_stack >= 2) { p->blocks[b].max_stack = 1; return 0; }
  return -1;
}
static int p_enum(GwProgram *p) {
  if (!p->n_endpoints) return -1;
  p->endpoints[0].method = GW_METHOD_MAX;
  return 0;
}

static void patched(const char *name, Patch fn, const char *want) {
  GwProgram *p = load_valid();
  if (fn(p) != 0) {
    gw_program_free(p);
    bad(name, "the test program has nothing to patch (tests/corpus/program/small.gw changed?)");
    return;
  }
  GwBuf out = {0};
  gw_program_write(p, &out);
  gw_program_free(p);
  expect_refused(name, (const unsigned char *)out.p, out.n, want);
  gw_buf_free(&out);
}

/* ---- raw images ------------------------------------------------------------ */

static void raw_tests(void) {
  unsigned char *c;
  int e;

  c = copy_valid(); c[1] ^= 0x20;
  expect_refused("wrong magic", c, nvalid, "bad magic"); free(c);

  c = copy_valid(); gw_put_u32(c + 8, GW_FORMAT_VERSION + 1); fix_sha(c, nvalid);
  expect_refused("wrong version", c, nvalid, "unsupported format version"); free(c);

  expect_refused("empty file", valid, 0, "not a gw program");
  expect_refused("truncated magic", valid, 5, "too short");
  expect_refused("truncated header", valid, GW_HEADER_SIZE - 8, "truncated program");
  expect_refused("header only", valid, GW_HEADER_SIZE, "truncated program (section table)");
  expect_refused("truncated section table", valid, GW_HEADER_SIZE + 12 * 3, "truncated program (section table)");
  expect_refused("truncated body", valid, nvalid - 4, "checksum mismatch");

  c = copy_valid(); c[nvalid - 1] ^= 1;
  expect_refused("flipped last byte", c, nvalid, "checksum mismatch"); free(c);

  c = copy_valid(); gw_put_u32(c + 12, GW_MAX_SECTIONS + 1); fix_sha(c, nvalid);
  expect_refused("too many sections", c, nvalid, "truncated program (section table)"); free(c);

  c = copy_valid(); e = table_entry(c, GW_SEC_code);
  gw_put_u32(c + GW_HEADER_SIZE + 12 * e + 4, (uint32_t)nvalid + 4096); fix_sha(c, nvalid);
  expect_refused("section outside the file", c, nvalid, "outside the file"); free(c);

  c = copy_valid(); e = table_entry(c, GW_SEC_code);
  gw_put_u32(c + GW_HEADER_SIZE + 12 * e + 8, 0xFFFFFFF0u); fix_sha(c, nvalid);
  expect_refused("section size past the end", c, nvalid, "outside the file"); free(c);

  c = copy_valid(); e = table_entry(c, GW_SEC_code);
  gw_put_u32(c + GW_HEADER_SIZE + 12 * e + 4, GW_HEADER_SIZE); fix_sha(c, nvalid);
  expect_refused("section over the section table", c, nvalid, "outside the file"); free(c);

  c = copy_valid(); e = table_entry(c, GW_SEC_code);
  gw_put_u32(c + GW_HEADER_SIZE + 12 * e + 4, gw_get_u32(c + GW_HEADER_SIZE + 12 * e + 4) + 2); fix_sha(c, nvalid);
  expect_refused("misaligned section", c, nvalid, "outside the file"); free(c);

  c = copy_valid();
  gw_put_u32(c + GW_HEADER_SIZE + 12, gw_get_u32(c + GW_HEADER_SIZE)); fix_sha(c, nvalid);
  expect_refused("repeated section id", c, nvalid, "repeated section id"); free(c);

  c = copy_valid(); gw_put_u32(c + GW_HEADER_SIZE, 0); fix_sha(c, nvalid);
  expect_refused("section id 0", c, nvalid, "bad or repeated section id"); free(c);

  c = copy_valid(); gw_put_u32(c + GW_HEADER_SIZE, 30); fix_sha(c, nvalid);
  expect_refused("unknown section id", c, nvalid, "unknown section id 30"); free(c);

  c = copy_valid(); e = table_entry(c, GW_SEC_consts);
  gw_put_u32(c + GW_HEADER_SIZE + 12 * e + 8, gw_get_u32(c + GW_HEADER_SIZE + 12 * e + 8) - 4); fix_sha(c, nvalid);
  expect_refused("size not a multiple of the record size", c, nvalid, "not a whole number of records"); free(c);

  /* dropping the last section entry (the blob) leaves the constants dangling */
  c = copy_valid(); gw_put_u32(c + 12, gw_get_u32(c + 12) - 1); fix_sha(c, nvalid);
  expect_refused("missing blob section", c, nvalid, "outside the blob"); free(c);
}

static void roundtrip(void) {
  GwProgram *p = load_valid();
  GwBuf out = {0};
  gw_program_write(p, &out);
  if (out.n == nvalid && memcmp(out.p, valid, nvalid) == 0) ok("write(load(image)) == image");
  else bad("write(load(image)) == image", "the rewritten image differs");
  char err[256];
  GwProgram *q = gw_program_load(out.p, out.n, err, sizeof err);
  if (!q) bad("reload", err);
  else {
    int same = q->n_code == p->n_code && q->n_consts == p->n_consts && q->n_endpoints == 1 &&
               memcmp(q->sha256, valid + 16, 32) == 0;
    if (same) ok("reload"); else bad("reload", "the reloaded program differs");
    gw_program_free(q);
  }
  gw_program_free(p);
  gw_buf_free(&out);
}

/* Opt-in (--slow, or --chain=N for a chain of N): lambdas that each run the next one twice. The verifier
** must not take time exponential in the nesting. Appends a chain of n
** lambda blocks to endpoint 0 and makes its response run the first. */
static int chain_n = 40, chain_long = 40;
static int p_lambda_chain(GwProgram *p) {
  if (!p->n_endpoints || p->endpoints[0].respond == GW_NONE) return -1;
  uint32_t b0 = p->n_blocks, c0 = p->n_code, nb = (uint32_t)chain_n;
  uint32_t ncode = 6 * nb + 3;
  p->blocks = realloc(p->blocks, (p->n_blocks + nb) * sizeof *p->blocks);
  p->code = realloc(p->code, (p->n_code + ncode) * sizeof *p->code);
  p->lines = realloc(p->lines, (p->n_lines + ncode) * sizeof *p->lines);
  if (!p->blocks || !p->code || !p->lines) abort();
  uint32_t pc = c0;
  for (uint32_t i = 0; i < nb; i++) {
    GwBlock *B = &p->blocks[b0 + i];
    B->code_first = pc; B->endpoint = 0; B->lambda = 1; B->file = 0; B->max_stack = 2;
    if (i + 1 < nb) {
      p->code[pc++].ins = GW_INS(GW_OP_CUR, 0);
      p->code[pc++].ins = GW_INS(GW_OP_MAP, b0 + i + 1);
      p->code[pc++].ins = GW_INS(GW_OP_CUR, 0);
      p->code[pc++].ins = GW_INS(GW_OP_MAP, b0 + i + 1);
      p->code[pc++].ins = GW_INS(GW_OP_ADD, 0);
    } else {
      p->code[pc++].ins = GW_INS(GW_OP_CUR, 0);
    }
    p->code[pc++].ins = GW_INS(GW_OP_RETURN, 0);
    B->code_count = pc - B->code_first;
  }
  /* the response: query, MAP first lambda, RETURN (a new non-lambda block
  ** would come after the lambdas, so reuse the response's block number by
  ** pointing it at new code) */
  GwBlock *R = &p->blocks[p->endpoints[0].respond];
  R->code_first = pc;
  p->code[pc++].ins = GW_INS(GW_OP_ROOT, GW_ROOT_QUERY);
  p->code[pc++].ins = GW_INS(GW_OP_MAP, b0);
  p->code[pc++].ins = GW_INS(GW_OP_RETURN, 0);
  R->code_count = 3; R->max_stack = 1;
  for (uint32_t i = c0; i < pc; i++) p->lines[i].line = 1;
  p->n_blocks += nb; p->n_code = pc; p->n_lines = pc;
  p->endpoints[0].rdep_count = 0;
  return 0;
}

int main(int argc, char **argv) {
  int slow = 0;
  const char *src = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--slow")) slow = 1;
    else if (!strncmp(argv[i], "--chain=", 8)) { slow = 1; chain_long = atoi(argv[i] + 8); }
    else src = argv[i];
  }
  if (!src) { fprintf(stderr, "usage: test_program [--slow] SMALL.gw\n"); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  FILE *devnull = fopen("/dev/null", "w");
  GwBuf img = {0};
  const char *paths[1] = { src };
  int rc = gwc_compile_paths(paths, 1, devnull, &img);
  if (rc != 0) { printf("FAIL compile %s: exit %d\n", src, rc); printf("0 passed, 1 failed\n"); return 1; }
  ok("compile");
  valid = (unsigned char *)img.p; nvalid = img.n;

  char err[256];
  GwProgram *p = gw_program_load(valid, nvalid, err, sizeof err);
  if (!p) bad("load the valid image", err);
  else {
    if (p->n_endpoints == 1 && p->n_calls == 2 && p->n_blob > 0) ok("load the valid image");
    else bad("load the valid image", "unexpected counts");
    uint32_t len = 0;
    int found = 0;
    for (uint32_t k = 0; k < p->n_consts; k++) {
      const char *s = gw_const_str(p, k, &len);
      if (len == 4 && !memcmp(s, "anon", 4) && !gw_const_is_number(p, k)) found |= 1;
      if (len == 3 && !memcmp(s, "1.5", 3) && gw_const_is_number(p, k)) found |= 2;
    }
    if (found == 3) ok("constants"); else bad("constants", "\"anon\" or 1.5 not found with the right kind");
    gw_program_free(p);
  }
  roundtrip();
  raw_tests();

  patched("jump out of its block", p_jump_out, "jump outside the block");
  patched("jump just past the block", p_jump_to_end, "jump outside the block");
  patched("stack underflow", p_underflow, "stack underflow");
  patched("constant index out of range", p_const_range, "CONST: constant");
  patched("FIELD with a number constant", p_field_number, "FIELD: constant");
  patched("call dependency cycle", p_cycle, "cycle");
  patched("call depending on itself", p_self_dep, "cycle");
  patched("call reading an undeclared dependency", p_missing_dep, "without depending on it");
  patched("block index out of range", p_block_range, "field url out of range");
  patched("block code past the code section", p_code_range, "field code_first out of range");
  patched("unknown opcode", p_bad_opcode, "unknown opcode");
  patched("block without RETURN", p_no_return, "falls off its end");
  patched("'.' outside a lambda", p_cur_outside, "outside a lambda");
  patched("lambda block not later", p_lambda_backwards, "is not a later lambda");
  patched("parameter out of range", p_param_range, "parameter 7 out of range");
  patched("string constant not UTF-8", p_bad_utf8, "not valid UTF-8");
  patched("number constant not JSON", p_bad_number, "not a JSON number");
  patched("constant outside the blob", p_const_outside_blob, "outside the blob");
  patched("bad status", p_bad_status, "bad status 99");
  patched("parameter count", p_param_count, "parameters declared");
  patched("route to a missing endpoint", p_route_range, "route 0: endpoint out of range");
  patched("line table size", p_lines, "line table");
  patched("max_stack too small", p_max_stack, "max_stack");
  patched("enum out of range", p_enum, "field method out of range");

  if (slow) {
    /* a short chain must load (the construction is valid) ... */
    chain_n = 8;
    GwProgram *q = load_valid();
    p_lambda_chain(q);
    GwBuf out = {0};
    gw_program_write(q, &out);
    gw_program_free(q);
    GwProgram *r = gw_program_load(out.p, out.n, err, sizeof err);
    if (r) { ok("lambda chain of 8 loads"); gw_program_free(r); }
    else bad("lambda chain of 8 loads", err);
    gw_buf_free(&out);
    /* ... and a long one must load (or be refused) quickly */
    chain_n = chain_long;
    q = load_valid();
    p_lambda_chain(q);
    gw_program_write(q, &out);
    gw_program_free(q);
    r = gw_program_load(out.p, out.n, err, sizeof err);
    char name[400];
    snprintf(name, sizeof name, "lambda chain of %d finished (%s)", chain_long, r ? "loaded" : err);
    if (r) gw_program_free(r);
    ok(name);
    gw_buf_free(&out);
  }

  gw_buf_free(&img);
  fclose(devnull);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
