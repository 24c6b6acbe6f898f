/*
** gwr_vm.h — the expression VM: runs one code block of a verified program
** over request values and returns its value.
**
** The program was verified at load (gw_program.c), so the VM trusts operand
** ranges, stack depths and jump targets; it still bounds the work of one
** request (GwrVm.max_steps), because a small program can ask for a lot
** (a map inside a map over large arrays).
*/
#ifndef GWR_VM_H
#define GWR_VM_H

#include "gw_bytecode.h"
#include "gwr_value.h"

typedef struct GwrVm {
  const GwProgram *p;
  GwArena   *arena;          /* the request's; every value made goes there */
  GwValue  **params;         /* path parameters of the endpoint, in order */
  GwValue   *roots[GW_ROOT_PARAM];   /* query, headers, body, jwt, client */
  GwValue  **results;        /* per call of the endpoint: its value, NULL until settled */
  GwValue  **envs;           /* per env reference: resolved at load (program-wide) */
  const GwValue *consts;     /* per constant: its value, made once at load (read-only) */
  uint64_t   steps, max_steps;
  double     now;            /* now(), fixed for the request */
  int        missing;        /* set by ENCSEG/ENCTAIL on null: the call cannot be made */
  /* A {rest*} tail's decoded segments: ENCTAIL of that very value encodes
  ** each segment and joins them with '/', so a decoded "%2F" inside a
  ** segment never becomes a separator. */
  const GwValue *tail_value;
  const char *const *tail_seg;
  const uint32_t *tail_len;
  int        tail_n;
  const char *error;         /* why the last run returned NULL */
} GwrVm;

#define GWR_VM_MAX_STEPS 10000000u

/* Run block b with '.' = cur (NULL outside lambdas). Returns its value, or
** NULL on error (vm->error says why; vm->missing for a missing URL value). */
GwValue *gwr_vm_run(GwrVm *vm, uint32_t b, GwValue *cur);

/* Percent-encoding used by ENCSEG/ENCQUERY, for other callers (query
** objects): every byte but unreserved ones (A-Z a-z 0-9 - . _ ~) encoded. */
void gwr_pct_encode(GwBuf *out, const char *s, size_t n);

#endif
