/*
** gwc_graph.h — the call graph and read paths (gwc_graph.c), as codegen
** and dump consume them.
*/
#ifndef GWC_GRAPH_H
#define GWC_GRAPH_H

#include "gwc_sema.h"

#define GWC_MAX_STEPS 32

typedef struct Step { int kind; const char *name; int index; } Step;   /* GW_STEP_* */
typedef struct RPath { int call; int nsteps; Step steps[GWC_MAX_STEPS]; } RPath;
/* The paths read from one call's body; `whole` when the empty path is read. */
typedef struct ReadSet { RPath *v; int n, cap; } ReadSet;
/* Request inputs read: root (GW_ROOT_*), name (NULL = the whole root). */
typedef struct Input { int root; const char *name; } Input;
typedef struct InputSet { Input *v; int n, cap; } InputSet;

/* Render a read path as text: `items[*].total`, or `(whole value)`. */
void gwc_path_text(const RPath *p, GwBuf *out);

#endif
