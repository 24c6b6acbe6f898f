/*
** gwr_router.h — the router: a program's route table compiled into a trie of
** path segments, and the lookup that picks an endpoint for (method, path).
**
** Not the HTTP layer: the router never sees a raw request target. It gets the
** path already normalized and split into segments (dot segments resolved, "//"
** merged, split *before* percent-decoding so "%2F" stays inside a segment).
**
** Matching, per segment, prefers
**     static  >  {x:int}  >  {x:uuid}  >  {x} (string)  >  {x*} (tail)
** and backtracks: a static prefix that dead-ends falls back to a parameter
** branch (GET /a/b/c and GET /a/{x}/d: "/a/b/d" is the second). The first
** node in that order whose routes accept the method wins; a node that only
** has routes for other methods does not stop the search. Every trie node is
** visited at most once per lookup, so the worst case is bounded by the size
** of the trie, and the common case is O(path length). No allocation.
**
** Segment rules (on the decoded segment):
**   static    byte-equal to the route's literal, itself percent-decoded at
**             build time (case-sensitive).
**   {x:int}   an optional '-' then 1 to 18 ASCII digits (always fits an int64).
**             Leading zeros are allowed ("007", "-0"); "+1", "1e3", "1.0" and
**             19 digits do not match. The value is the segment text as is.
**   {x:uuid}  8-4-4-4-12 hex digits, either case, nothing around it.
**   {x}       any non-empty segment (it may contain '/' from a "%2F").
**   {x*}      one or more remaining segments (so /files/{rest*} does NOT match
**             "/files"), and not a lone empty segment. Its value is the decoded
**             remaining segments joined with '/' (see GwrMatch.tail_first).
** An empty segment (a trailing slash, if the HTTP layer keeps it) matches
** only inside a tail.
**
** Methods: an exact-method route beats a '*' route on the same node. HEAD is
** served by the node's GET route, else its '*' route (is_head = 1 either way:
** send no body). A method with no GW_METHOD_ code may be passed as
** GW_METHOD_ANY: only '*' routes accept it. OPTIONS is matched like any other
** method (only a '*' route accepts it); when that gives 405 the HTTP layer
** answers the OPTIONS itself with the Allow mask.
**
** Two routes with the same shape and method (the compiler refuses them): the
** first in the program's route table wins.
*/
#ifndef GWR_ROUTER_H
#define GWR_ROUTER_H

#include <stdint.h>
#include <stddef.h>
#include "gw_bytecode.h"

#define GWR_MAX_PARAMS 32

typedef struct GwrRouter GwrRouter;

/* Build the router of p. Returns it owned (free with gwr_router_free), or
** NULL when out of memory or when a route is malformed (an index out of
** range, a tail that is not last, more than GWR_MAX_PARAMS parameters).
** p is borrowed: only read during the call; the router keeps no pointer
** into it. The router is immutable and may be shared by threads. */
GwrRouter *gwr_router_build(const GwProgram *p);
void gwr_router_free(GwrRouter *r);

/* One path segment: raw (percent-encoded, as normalized) and decoded. */
typedef struct GwrRouteSeg { const char *raw; uint32_t raw_len; const char *dec; uint32_t dec_len; } GwrRouteSeg;

typedef struct GwrMatch {
  uint32_t endpoint;                 /* index into p->endpoints */
  uint32_t nparams;
  /* Decoded values in parameter order (the order of the route's non-static
  ** segments), pointing into the caller's segments: borrowed. A tail's value
  ** is dec[first] '/' dec[first+1] '/' ... dec[last]: when the HTTP layer lays
  ** the decoded segments out in one buffer separated by '/', p points at that
  ** span (no copy); otherwise p is NULL, n is the joined length, and the
  ** caller builds it with gwr_tail_join(). */
  struct { const char *p; uint32_t n; } param[GWR_MAX_PARAMS];
  int is_head;                       /* a HEAD request (served by GET or '*'): no body */
  int tail_first;                    /* index of the first segment the tail took; -1: no tail */
} GwrMatch;

/* Route a normalized path (segments as produced by the HTTP layer; nsegs = 0
** is "/") for a method (GW_METHOD_*). segs is borrowed; m's values point into
** it. Returns 200 and fills m; 404 when no route matches the path; 405 when
** routes match the path but none accepts the method: then *allow (if allow
** is not NULL) = bitmask of the methods that would be accepted (bit
** 1u << GW_METHOD_x), HEAD included when GET is, OPTIONS always. *allow is
** only written on 405. */
int gwr_route(const GwrRouter *r, int method, const GwrRouteSeg *segs, int nsegs, GwrMatch *m, uint32_t *allow);

/* Write a tail's value (segments from..nsegs-1 decoded, joined with '/') into
** buf, NUL-terminated if cap > 0. Returns the full length (like snprintf). */
size_t gwr_tail_join(const GwrRouteSeg *segs, int from, int nsegs, char *buf, size_t cap);

/* Format an Allow header value from the mask ("GET, HEAD, OPTIONS"; order
** GET HEAD POST PUT PATCH DELETE OPTIONS) into buf, NUL-terminated if cap > 0.
** Returns the full length (like snprintf). */
size_t gwr_allow_string(uint32_t allow, char *buf, size_t cap);

#endif
