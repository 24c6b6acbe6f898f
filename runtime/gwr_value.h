/*
** gwr_value.h — the runtime's JSON value model.
**
** Values live in a request's arena (GwArena) and die with it; nothing here
** frees. null/true/false are shared constants. Numbers keep their JSON text
** (`s`, `n`), so a number read from a backend leaves byte-identical; numbers
** the VM computes are formatted by gwv_number(). Objects keep insertion
** order; a later gwv_set() of an existing key replaces the value in place
** (the first key's position wins). Strings are UTF-8, not NUL-terminated
** in general (use the length).
**
** Not here: parsing and generating JSON text (gwr_json.c), the VM (gwr_vm.c).
*/
#ifndef GWR_VALUE_H
#define GWR_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include "gw_util.h"

typedef enum { GWV_NULL, GWV_FALSE, GWV_TRUE, GWV_NUMBER, GWV_STRING, GWV_ARRAY, GWV_OBJECT } GwvType;

typedef struct GwValue GwValue;
typedef struct GwMember { const char *key; uint32_t klen; GwValue *val; } GwMember;

struct GwValue {
  uint8_t  type;        /* GwvType */
  uint32_t n;           /* bytes of a string or number; elements of an array or object */
  uint32_t cap;         /* allocated elements (arrays, objects) */
  union {
    const char *s;      /* GWV_STRING, GWV_NUMBER */
    GwValue   **items;  /* GWV_ARRAY */
    GwMember   *members;/* GWV_OBJECT */
  } u;
  uint32_t *hidx;       /* objects past GWV_INDEX_MIN keys: a hash index of the
                           members (2 x cap slots, 0 empty, i+1 = member i), built
                           lazily and kept by gwv_set, so that building or reading a
                           large object stays linear */
};
#define GWV_INDEX_MIN 16

extern GwValue gwv_null, gwv_true, gwv_false;
#define GWV_IS_NULL(v) (!(v) || (v)->type == GWV_NULL)

static inline GwValue *gwv_bool(int b) { return b ? &gwv_true : &gwv_false; }

/* Constructors: the result is owned by the arena. _copy copies the bytes;
** _ref keeps the pointer (which must outlive the arena, e.g. a program
** constant). gwv_number_text expects valid JSON number text. */
GwValue *gwv_string_copy(GwArena *a, const char *s, size_t n);
GwValue *gwv_string_ref(GwArena *a, const char *s, size_t n);
GwValue *gwv_number_text(GwArena *a, const char *s, size_t n, int copy);
/* A computed number: an integer when integral and |d| < 2^53, otherwise
** the shortest text that reads back as the same double; NaN/inf → null. */
GwValue *gwv_number(GwArena *a, double d);
GwValue *gwv_array(GwArena *a, uint32_t cap);
GwValue *gwv_object(GwArena *a, uint32_t cap);

void     gwv_append(GwArena *a, GwValue *arr, GwValue *v);
/* Set key k of obj (copying k unless copy_key is 0): replaces in place if
** present. Objects must be changed only through gwv_set once read with
** gwv_get/gwv_set (their index would go stale otherwise). */
void     gwv_set(GwArena *a, GwValue *obj, const char *k, size_t kn, GwValue *v, int copy_key);
/* The value of key k, or NULL if obj is not an object or has no such key. */
GwValue *gwv_get(const GwValue *obj, const char *k, size_t kn);

/* Only null and false are falsy. */
int  gwv_truthy(const GwValue *v);
/* A number (or a numeric string, when strings_too) as a double. 0 if not. */
int  gwv_to_double(const GwValue *v, double *d, int strings_too);
/* Deep equality; numbers compare by value (1 == 1.0). */
int  gwv_equal(const GwValue *a, const GwValue *b);
/* -1/0/1 for two numbers or two strings; 2 when not comparable. */
int  gwv_compare(const GwValue *a, const GwValue *b);

/* Interpolation rendering: strings raw, numbers as their text, true/false,
** null as nothing, objects and arrays as compact JSON. */
void gwv_render(const GwValue *v, GwBuf *out);
/* Compact JSON text (no spaces), numbers verbatim, appended to out. Defined
** in gwr_json.c: yajl_gen is the one JSON generator of the runtime. */
void gwv_json(const GwValue *v, GwBuf *out);

#endif
