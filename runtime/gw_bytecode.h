/*
** gw_bytecode.h — the compiled program (.gwb): file layout, records,
** opcodes, and the reader/verifier shared by gwc and gwd.
**
** File layout (little-endian, every field fixed-width):
**
**   offset  size  field
**   0       8     magic  "\x89GWB\r\n\x1a\n"
**   8       4     format version (GW_FORMAT_VERSION)
**   12      4     number of sections N
**   16      32    SHA-256 of every byte from offset 48 to the end
**   48      12*N  section table: id, offset, size (u32 each)
**   ...           sections, each 4-byte aligned
**
** Sections and their records are declared in gw_format.def; opcodes in
** gw_opcodes.def; builtins in gw_builtins.def. docs/bytecode.md is
** generated from those three tables.
**
** A GwProgram is immutable once loaded; gwd refcounts the GwrProg that owns
** it, so requests finish on the program they started with.
*/
#ifndef GW_BYTECODE_H
#define GW_BYTECODE_H

#include <stdint.h>
#include <stddef.h>

#define GW_MAGIC          "\x89GWB\r\n\x1a\n"
#define GW_FORMAT_VERSION 1u
#define GW_HEADER_SIZE    48u
#define GW_NONE           0xFFFFFFFFu
#define GW_MAX_STACK      256u      /* per block */
#define GW_MAX_SECTIONS   64u
#define GW_MAX_NEST       64u       /* lambda nesting */
#define GW_MAX_FILE_SIZE  (256u << 20)
#define GW_SEC_BLOB       29u       /* raw bytes of the constants */

/* Opcodes. */
enum {
#define OP(name, fmt, pops, pushes, doc) GW_OP_##name,
#include "gw_opcodes.def"
#undef OP
  GW_OP_MAX
};
/* Operand formats. */
enum { GW_FMT_NONE, GW_FMT_CONST, GW_FMT_ENV, GW_FMT_PARAM, GW_FMT_ROOT,
       GW_FMT_CALL, GW_FMT_BLOCK, GW_FMT_COUNT, GW_FMT_JUMP, GW_FMT_FUNC };
/* Builtins. */
enum {
#define FN(name, mn, mx, doc) GW_FN_##name,
#include "gw_builtins.def"
#undef FN
  GW_FN_MAX
};

typedef struct GwOpInfo { const char *name; int fmt, pops, pushes; const char *doc; } GwOpInfo;
typedef struct GwFnInfo { const char *name; int min, max; const char *doc; } GwFnInfo;
extern const GwOpInfo gw_ops[GW_OP_MAX];
extern const GwFnInfo gw_fns[GW_FN_MAX];
extern const char *const gw_fmt_names[];

#define GW_INS(op, a)     ((uint32_t)(op) | ((uint32_t)(a) << 8))
#define GW_INS_OP(i)      ((i) & 0xFFu)
#define GW_INS_A(i)       ((i) >> 8)
#define GW_INS_SA(i)      ((int32_t)((i) & 0xFFFFFF00u) >> 8)   /* signed */
#define GW_MAX_A          0xFFFFFFu
#define GW_FUNC_A(fn, n)  ((uint32_t)(fn) | ((uint32_t)(n) << 16))

/* Request roots (ROOT operand) and input roots (GwInput.root). */
enum { GW_ROOT_QUERY, GW_ROOT_HEADERS, GW_ROOT_BODY, GW_ROOT_JWT, GW_ROOT_CLIENT,
       GW_ROOT_PARAM, GW_ROOT_MAX };
extern const char *const gw_root_names[GW_ROOT_MAX];
/* Methods. */
enum { GW_METHOD_ANY, GW_METHOD_GET, GW_METHOD_POST, GW_METHOD_PUT, GW_METHOD_PATCH,
       GW_METHOD_DELETE, GW_METHOD_HEAD, GW_METHOD_OPTIONS, GW_METHOD_MAX };
extern const char *const gw_method_names[GW_METHOD_MAX];
/* Route segments (GwSeg.kind), in the router's order of preference. */
enum { GW_SEG_STATIC, GW_SEG_INT, GW_SEG_UUID, GW_SEG_STRING, GW_SEG_TAIL, GW_SEG_MAX };
extern const char *const gw_seg_names[GW_SEG_MAX];
/* Read-path steps. */
enum { GW_STEP_FIELD, GW_STEP_INDEX, GW_STEP_EACH };
/* JWT algorithms (bit i of GwAuth.algs). */
extern const char *const gw_jwt_algs[];
#define GW_JWT_NALGS 12

/* Section ids. */
#include "gw_format.def"
enum {
#define S(name, id, T, FIELDS) GW_SEC_##name = id,
  GW_SECTIONS(S)
#undef S
};

/* Record structs, one per section. */
#define GW_FIELD_DECL(f, kind, arg) uint32_t f;
#define S(name, id, T, FIELDS) typedef struct T { FIELDS(GW_FIELD_DECL) } T;
GW_SECTIONS(S)
#undef S

/* Number of u32 fields of each record. */
#define GW_FIELD_COUNT(f, kind, arg) + 1
#define S(name, id, T, FIELDS) enum { GW_NF_##name = 0 FIELDS(GW_FIELD_COUNT) };
GW_SECTIONS(S)
#undef S

/* A loaded program. Arrays are owned by the program. */
typedef struct GwProgram {
#define S(name, id, T, FIELDS) T *name; uint32_t n_##name;
  GW_SECTIONS(S)
#undef S
  unsigned char *blob;
  uint32_t       n_blob;
  unsigned char  sha256[32];
} GwProgram;

/* Load and verify an image. On success returns an owned program;
** on failure returns NULL and writes a one-line reason into err. The image
** is borrowed (copied as needed). Never crashes or loops on hostile input. */
GwProgram *gw_program_load(const void *image, size_t size, char *err, size_t errlen);
/* Serialize p into out (appended). Returns 0. */
struct GwBuf;
int  gw_program_write(const GwProgram *p, struct GwBuf *out);
/* Free a program built in memory (by the compiler) or loaded. */
void gw_program_free(GwProgram *p);

/* Helpers for readers of a verified program. */
const char *gw_const_str(const GwProgram *p, uint32_t k, uint32_t *len);
int         gw_const_is_number(const GwProgram *p, uint32_t k);

#endif
