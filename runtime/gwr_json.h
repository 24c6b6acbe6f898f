/*
** gwr_json.h — JSON in and out of the runtime's value model.
**
** In: backend bodies are parsed by yajl as they arrive, keeping only the
** values the endpoint's read paths reach (GwrPaths); everything else is
** validated and skipped without allocating. The client's request body is
** parsed whole. Numbers keep their source text. yajl checks the shape of
** UTF-8 everywhere; kept strings and keys are also checked to be strict
** UTF-8 (no overlong forms, surrogates or code points past U+10FFFF) —
** skipped ones are not, since they go nowhere. Out: values are generated
** with yajl_gen into one piece of text for a sink, numbers verbatim.
**
** Not here: the value model (gwr_value.c), HTTP framing, size limits on the
** body (the caller stops feeding past max_response).
**
** What a set of read paths keeps (the "keep-only" rules):
**   - a value where some path ends is kept whole;
**   - an object reached by paths that go on keeps only the keys some path
**     names (a `[*]` step reaches every value of an object too);
**   - an array reached by paths that go on keeps every element a `[*]` step
**     or a field step reaches (a field step met on an array applies to its
**     elements, and again to elements of nested arrays); when index steps
**     `[i]` apply, positions 0..max(i) are all kept, those no path reaches as
**     null, so `a[i]` in the VM finds the right element; positions past the
**     largest index that nothing else reaches are dropped (memory stays
**     bounded by the program, not by the body);
**   - a scalar reached by a path that goes on is kept (the VM reads null
**     through it);
**   - with no read paths at all the body is validated and null is returned.
*/
#ifndef GWR_JSON_H
#define GWR_JSON_H

#include <stddef.h>
#include "gw_bytecode.h"
#include "gw_util.h"
#include "gwr_value.h"

#define GWR_JSON_MAX_DEPTH 64

typedef struct GwrJsonLimits {
  int max_depth;        /* containers nested deeper fail with "too deep"; <= 0: 64 */
} GwrJsonLimits;

/* The read paths of one call compiled into a matcher. Immutable once built,
** so workers share it without locks. */
typedef struct GwrPaths GwrPaths;

/* Build the matcher of call's read paths (p verified). The trie is
** allocated from a, which must live as long as p; field names are not
** copied but point into p's constants (borrowed for p's lifetime). Never
** NULL. Call it once per call at load, not per request. */
GwrPaths *gwr_paths_build(GwArena *a, const GwProgram *p, const GwCall *call);
/* A matcher that keeps the whole body (request bodies, whole-value uses). */
GwrPaths *gwr_paths_whole(GwArena *a);
/* A matcher from path strings, for tests and tools: `user.id`,
** `items[*].total`, `items[0]`, `[2].x`; "" is the whole body; n == 0 keeps
** nothing. A negative index counts as `[*]`. Field names are the bytes up to
** the next `.` or `[`. Returns NULL on a malformed path. Keys are copied
** into a. */
GwrPaths *gwr_paths_from_strings(GwArena *a, const char *const *paths, int n);

/* Incremental extraction of one body. */
typedef struct GwrExtract GwrExtract;

/* A new extractor. paths is borrowed (must outlive the extractor); values
** are allocated from a (the request's arena) and outlive the extractor.
** lim may be NULL (defaults). The extractor itself and yajl's buffers are
** malloc'd and released by gwr_extract_free(). NULL only if out of memory. */
GwrExtract *gwr_extract_new(GwArena *a, const GwrPaths *paths, const GwrJsonLimits *lim);
/* Feed the next n bytes (any split is fine). 0 ok; -1 on invalid JSON, too
** deep, invalid UTF-8, or after an earlier error (the error is sticky). */
int  gwr_extract_feed(GwrExtract *x, const char *p, size_t n);
/* End of body: 0 and *out (never NULL; null if nothing was kept) when the
** input was exactly one JSON text with nothing but whitespace after it; -1
** otherwise. Call once. */
int  gwr_extract_finish(GwrExtract *x, GwValue **out);
/* Why the last call failed: a short static-style reason with a byte offset,
** never body content. "" when there was no error. Owned by x. */
const char *gwr_extract_error(const GwrExtract *x);
/* Free the extractor and its yajl handle (NULL is fine); values stay in the
** arena. */
void gwr_extract_free(GwrExtract *x);

/* Parse a whole document (the client's request body) into a. Empty or
** all-whitespace input gives null. 0 ok with *out set; -1 with a reason in
** err (NUL-terminated, truncated to errlen). */
int gwr_json_parse(GwArena *a, const char *p, size_t n, const GwrJsonLimits *lim,
                   GwValue **out, char *err, size_t errlen);

/* Generate v (NULL is null) as compact JSON through sink, with yajl_gen:
** numbers verbatim, strings escaped by yajl (`/` is not escaped), objects
** in insertion order. sink is called once, with the whole text. Returns 0,
** or -1 if v cannot be written (sink not called): a string that is not
** valid UTF-8, or nesting deeper than yajl_gen's 128 levels. */
typedef void (*GwrJsonSink)(void *ctx, const char *p, size_t n);
int gwr_json_write(const GwValue *v, GwrJsonSink sink, void *ctx);

#endif
