/*
** test_backend.c — unit tests of a backend's runtime state (gwr_backend.c),
** with a clock driven by hand and no network:
**
**   build/test_backend
**
** Round robin spread (even over the targets in rotation); least_requests taking the target with the fewest
** calls in flight (ties round robin); a retry avoiding its last target;
** passive ejection after 5 failures in a row, never of the last target in
** rotation, back after the cooldown and out again at the next failure, a
** success clearing the count; active checks taking a target down after
** `failures` checks (even the last: "unavailable") and back after one
** success; the breaker opening on N failures within the window (not when
** they are spread wider), refusing while open, one probe at a time when
** half-open, closing on the probe's success, re-opening on its failure, an
** abandoned probe letting the next one through; the per-worker slots: the
** cap, the bounded queue in FIFO order, a waiter leaving the queue, a
** waiter declining its slot; and 4 threads hammering one backend (the
** in-flight counts return to zero). Ends with "N passed, N failed".
*/
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gwr_backend.h"

#include "check.h"

static const char *const URLS[] = { "http://a", "http://b", "http://c" };

static GwrBe *make(int n, int lr, int breaker) {
  GwrBeConfig c;
  memset(&c, 0, sizeof c);
  c.name = "test";
  c.least_requests = lr;
  c.max_connections = 2;
  c.passive_cooldown_ms = 1000;
  c.breaker = breaker;
  c.br_failures = 3;
  c.br_window_ms = 1000;
  c.br_cooldown_ms = 500;
  c.health_path = "/health";
  c.health_every_ms = 100;
  c.health_failures = 2;
  return gwr_be_new(&c, URLS, n);
}

/* One attempt at now that ends with outcome; returns its target (-1: refused). */
static int one(GwrBe *be, uint64_t now, int outcome) {
  GwrBeAttempt a;
  if (gwr_be_begin(be, -1, now, &a)) return -1;
  gwr_be_end(be, &a, outcome, now);
  return a.target;
}

static void test_round_robin(void) {
  GwrBe *be = make(3, 0, 0);
  int n[3] = {0};
  for (int i = 0; i < 300; i++) n[one(be, 1000, GWR_BE_OK)]++;
  CHECK(n[0] == 100 && n[1] == 100 && n[2] == 100, "round robin: even spread", "%d %d %d", n[0], n[1], n[2]);
  GwrBeAttempt a;
  int avoided = 1;
  for (int i = 0; i < 30; i++) {
    if (gwr_be_begin(be, 1, 1000, &a) || a.target == 1) avoided = 0;
    gwr_be_end(be, &a, GWR_BE_OK, 1000);
  }
  CHECK(avoided, "a retry avoids its last target", "target 1 picked");
  GwrBe *single = make(1, 0, 0);
  CHECK(!gwr_be_begin(single, 0, 1000, &a) && a.target == 0, "one target: avoid is ignored", "refused");
  gwr_be_end(single, &a, GWR_BE_OK, 1000);
  gwr_be_free(single);
  gwr_be_free(be);
}

static void test_least_requests(void) {
  GwrBe *be = make(3, 1, 0);
  GwrBeAttempt slow[4];
  /* target picked first gets 4 calls that stay in flight */
  int first = -1;
  for (int i = 0; i < 4; i++) {
    gwr_be_begin(be, -1, 1000, &slow[i]);
    if (first < 0) first = slow[i].target;
  }
  GwrBeTargetState st;
  uint32_t total = 0;
  for (int i = 0; i < 3; i++) { gwr_be_target_state(be, i, 1000, &st); total += st.inflight; }
  CHECK(total == 4, "least_requests: in-flight counted", "%u", total);
  /* the 4 spread over the 3 targets: 2,1,1 */
  int busy = -1;
  for (int i = 0; i < 3; i++) { gwr_be_target_state(be, i, 1000, &st); if (st.inflight == 2) busy = i; }
  int hits = 0;
  for (int i = 0; i < 60; i++) if (one(be, 1000, GWR_BE_OK) == busy) hits++;
  CHECK(busy >= 0 && hits == 0, "least_requests: the busiest target is avoided", "busy %d hits %d", busy, hits);
  int n[3] = {0};
  for (int i = 0; i < 4; i++) gwr_be_end(be, &slow[i], GWR_BE_OK, 1000);
  for (int i = 0; i < 300; i++) n[one(be, 1000, GWR_BE_OK)]++;
  CHECK(n[0] == 100 && n[1] == 100 && n[2] == 100, "least_requests: ties round robin", "%d %d %d", n[0], n[1], n[2]);
  for (int i = 0; i < 3; i++) { gwr_be_target_state(be, i, 1000, &st); total += st.inflight; }
  CHECK(total == 4, "least_requests: counts back to zero", "%u", total - 4);
  gwr_be_free(be);
}

static void test_passive(void) {
  GwrBe *be = make(2, 0, 0);
  GwrBeTargetState st;
  GwrBeAttempt a;
  /* target 0 fails, target 1 answers */
  uint64_t now = 1000;
  int fails0 = 0;
  while (fails0 < 5) {
    if (gwr_be_begin(be, -1, now, &a)) break;
    gwr_be_end(be, &a, a.target == 0 ? GWR_BE_FAIL : GWR_BE_OK, now);
    if (a.target == 0) fails0++;
  }
  gwr_be_target_state(be, 0, now, &st);
  CHECK(st.ejected && st.ejections == 1, "passive: ejected after 5 failures in a row", "ejected %d", st.ejected);
  int zero = 0;
  for (int i = 0; i < 20; i++) if (one(be, now + 500, GWR_BE_OK) == 0) zero++;
  CHECK(zero == 0, "passive: ejected target not picked", "%d", zero);
  /* the last target in rotation is never ejected */
  for (int i = 0; i < 20; i++) one(be, now + 500, GWR_BE_FAIL);
  gwr_be_target_state(be, 1, now + 500, &st);
  CHECK(!st.ejected && st.fails == 20, "passive: the last target is never ejected", "ejected %d fails %u", st.ejected, st.fails);
  CHECK(one(be, now + 500, GWR_BE_OK) == 1, "passive: the last target still serves", "refused");
  /* after the cooldown target 0 is picked again; one more failure ejects it again */
  now += 1001;
  zero = 0;
  for (int i = 0; i < 2; i++) {
    gwr_be_begin(be, -1, now, &a);
    if (a.target == 0) zero++;
    gwr_be_end(be, &a, a.target == 0 ? GWR_BE_FAIL : GWR_BE_OK, now);
  }
  gwr_be_target_state(be, 0, now, &st);
  CHECK(zero == 1 && st.ejected && st.ejections == 2, "passive: back after the cooldown, out again at the next failure",
        "picked %d ejected %d ejections %llu", zero, st.ejected, (unsigned long long)st.ejections);
  /* a success clears the count */
  now += 1001;
  for (int i = 0; i < 4; i++) { gwr_be_begin(be, 1, now, &a); gwr_be_end(be, &a, GWR_BE_OK, now); }
  gwr_be_target_state(be, 0, now, &st);
  CHECK(st.fails == 0 && !st.ejected, "passive: a success clears the failures", "fails %u", st.fails);
  /* abandoned attempts count for nothing */
  for (int i = 0; i < 10; i++) { gwr_be_begin(be, 1, now, &a); gwr_be_end(be, &a, GWR_BE_NONE, now); }
  gwr_be_target_state(be, 0, now, &st);
  CHECK(st.fails == 0 && !st.ejected, "passive: abandoned attempts do not count", "fails %u", st.fails);
  gwr_be_free(be);
}

static void test_active(void) {
  GwrBe *be = make(2, 0, 0);
  GwrBeTargetState st;
  GwrBeAttempt a;
  gwr_be_check_result(be, 0, 0, 1000);
  gwr_be_target_state(be, 0, 1000, &st);
  CHECK(!st.down, "active: one failed check is not enough", "down");
  gwr_be_check_result(be, 0, 0, 1100);
  gwr_be_target_state(be, 0, 1100, &st);
  CHECK(st.down, "active: down after `failures` failed checks", "not down");
  int zero = 0;
  for (int i = 0; i < 10; i++) if (one(be, 1100, GWR_BE_OK) == 0) zero++;
  CHECK(zero == 0, "active: a down target is not picked", "%d", zero);
  gwr_be_check_result(be, 1, 0, 1100);
  gwr_be_check_result(be, 1, 0, 1200);
  const char *why = gwr_be_begin(be, -1, 1200, &a);
  CHECK(why && !strcmp(why, "unavailable") && !a.live, "active: every target down: unavailable", "%s", why ? why : "admitted");
  gwr_be_check_result(be, 1, 1, 1300);
  why = gwr_be_begin(be, -1, 1300, &a);
  CHECK(!why && a.target == 1, "active: back after one passing check", "%s", why ? why : "");
  gwr_be_end(be, &a, GWR_BE_OK, 1300);
  gwr_be_free(be);
  /* the share of a target out of rotation spreads evenly over the others */
  be = make(3, 0, 0);
  gwr_be_check_result(be, 1, 0, 1000);
  gwr_be_check_result(be, 1, 0, 1000);
  int n[3] = {0};
  for (int i = 0; i < 300; i++) n[one(be, 1000, GWR_BE_OK)]++;
  CHECK(n[0] == 150 && n[1] == 0 && n[2] == 150, "round robin: even over the targets in rotation", "%d %d %d",
        n[0], n[1], n[2]);
  gwr_be_free(be);
}

static void test_breaker(void) {
  GwrBe *be = make(1, 0, 1);
  GwrBeAttempt a, b;
  CHECK(gwr_be_breaker_state(be) == GWR_BR_CLOSED, "breaker: starts closed", "%d", gwr_be_breaker_state(be));
  /* 3 failures spread wider than the window: stays closed */
  one(be, 1000, GWR_BE_FAIL); one(be, 1600, GWR_BE_FAIL); one(be, 2200, GWR_BE_FAIL);
  CHECK(gwr_be_breaker_state(be) == GWR_BR_CLOSED, "breaker: failures spread wider than the window", "%d",
        gwr_be_breaker_state(be));
  /* successes do not matter; 3 failures within 1 s open it */
  one(be, 2300, GWR_BE_OK);
  one(be, 2400, GWR_BE_FAIL); one(be, 2500, GWR_BE_FAIL);
  CHECK(gwr_be_breaker_state(be) == GWR_BR_OPEN && gwr_be_breaker_opens(be) == 1, "breaker: opens on N failures within the window",
        "%d", gwr_be_breaker_state(be));
  const char *why = gwr_be_begin(be, -1, 2700, &a);
  CHECK(why && !strcmp(why, "breaker_open"), "breaker: open refuses", "%s", why ? why : "admitted");
  /* after the cooldown: one probe, the others refused */
  why = gwr_be_begin(be, -1, 3001, &a);
  const char *why2 = gwr_be_begin(be, -1, 3002, &b);
  CHECK(!why && a.probe && why2 && !strcmp(why2, "breaker_open") && gwr_be_breaker_state(be) == GWR_BR_HALF_OPEN,
        "breaker: half-open lets one probe through", "%s / %s", why ? why : "probe", why2 ? why2 : "second admitted");
  gwr_be_end(be, &a, GWR_BE_FAIL, 3010);
  CHECK(gwr_be_breaker_state(be) == GWR_BR_OPEN && gwr_be_breaker_opens(be) == 2, "breaker: a failed probe re-opens it", "%d",
        gwr_be_breaker_state(be));
  why = gwr_be_begin(be, -1, 3400, &a);
  CHECK(why != NULL, "breaker: re-opened for a whole cooldown", "admitted");
  /* an abandoned probe lets the next attempt probe */
  why = gwr_be_begin(be, -1, 3511, &a);
  gwr_be_end(be, &a, GWR_BE_NONE, 3512);
  why2 = gwr_be_begin(be, -1, 3513, &b);
  CHECK(!why && !why2 && b.probe, "breaker: an abandoned probe frees the trial", "%s / %s", why ? why : "", why2 ? why2 : "");
  gwr_be_end(be, &b, GWR_BE_OK, 3520);
  CHECK(gwr_be_breaker_state(be) == GWR_BR_CLOSED, "breaker: a successful probe closes it", "%d", gwr_be_breaker_state(be));
  /* the window starts over: two failures do not re-open it */
  one(be, 3530, GWR_BE_FAIL); one(be, 3540, GWR_BE_FAIL);
  CHECK(gwr_be_breaker_state(be) == GWR_BR_CLOSED, "breaker: closing clears the window", "%d", gwr_be_breaker_state(be));
  GwrBe *none = make(1, 0, 0);
  for (int i = 0; i < 50; i++) one(none, 1000, GWR_BE_FAIL);
  CHECK(gwr_be_breaker_state(none) == -1 && one(none, 1000, GWR_BE_OK) == 0, "no breaker declared: never refuses", "refused");
  gwr_be_free(none);
  gwr_be_free(be);
}

static int order[16], norder;
static GwrBe *slot_be;
static int decline;
typedef struct W { GwrBeWait w; int id; } W;
static void ready(GwrBeWait *w) {
  W *x = (W *)w;
  order[norder++] = x->id;
  if (decline) gwr_be_release(slot_be, 0);
}

static void test_slots(void) {
  GwrBe *be = slot_be = make(1, 0, 0);      /* max_connections 2 */
  W w[6];
  memset(w, 0, sizeof w);
  for (int i = 0; i < 6; i++) { w[i].id = i; w[i].w.ready = ready; }
  int r0 = gwr_be_acquire(be, 0, &w[0].w), r1 = gwr_be_acquire(be, 0, &w[1].w);
  int r2 = gwr_be_acquire(be, 0, &w[2].w), r3 = gwr_be_acquire(be, 0, &w[3].w), r4 = gwr_be_acquire(be, 0, &w[4].w);
  CHECK(r0 == 1 && r1 == 1 && r2 == 0 && r3 == 0 && r4 == -1, "slots: cap, bounded queue, then overloaded",
        "%d %d %d %d %d", r0, r1, r2, r3, r4);
  CHECK(gwr_be_acquire(be, 1, &w[5].w) == 1, "slots: per worker", "worker 1 refused");
  gwr_be_release(be, 1);
  gwr_be_release(be, 0);
  CHECK(norder == 1 && order[0] == 2, "slots: a released slot goes to the first waiter", "n %d first %d", norder, order[0]);
  gwr_be_unqueue(be, 0, &w[3].w);
  gwr_be_release(be, 0);
  CHECK(norder == 1, "slots: a waiter that left is not woken", "n %d", norder);
  /* two waiters; the first declines its slot: the second gets it */
  norder = 0;
  CHECK(gwr_be_acquire(be, 0, &w[0].w) == 1, "slots: free again", "refused");
  gwr_be_acquire(be, 0, &w[3].w);
  gwr_be_acquire(be, 0, &w[4].w);
  decline = 1;
  gwr_be_release(be, 0);
  decline = 0;
  CHECK(norder == 2 && order[0] == 3 && order[1] == 4, "slots: a declined slot goes on", "n %d", norder);
  gwr_be_free(be);
}

static GwrBe *hammer_be;
static void *hammer(void *arg) {
  (void)arg;
  for (int i = 0; i < 200000; i++) {
    GwrBeAttempt a;
    uint64_t now = 1000 + (uint64_t)(i / 1000);
    if (!gwr_be_begin(hammer_be, -1, now, &a)) gwr_be_end(hammer_be, &a, i % 7 == 0 ? GWR_BE_FAIL : GWR_BE_OK, now);
  }
  return NULL;
}

static void test_threads(void) {
  hammer_be = make(3, 1, 1);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, NULL);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  uint32_t total = 0;
  for (int i = 0; i < 3; i++) {
    GwrBeTargetState st;
    gwr_be_target_state(hammer_be, i, 0, &st);
    total += st.inflight;
  }
  CHECK(total == 0, "threads: in-flight counts back to zero", "%u", total);
  gwr_be_free(hammer_be);
}

int main(void) {
  test_round_robin();
  test_least_requests();
  test_passive();
  test_active();
  test_breaker();
  test_slots();
  test_threads();
  return summary();
}
