/* bench/loadgen.c — a small HTTP/1.1 load generator for the gw benchmark.
 *
 * Two modes:
 *
 *   open loop   loadgen -r RATE -d SECONDS -c CONNS [-H "Name: value"]... HOST PORT PATH
 *       Request i is *due* at start + i/RATE, whether or not earlier answers have
 *       come back. A due request goes out on an idle keep-alive connection; when
 *       every connection is busy it waits in a queue. Its latency is measured from
 *       the time it was due (the intended send time), not from when it was
 *       written, so a stalled server is charged for every request it held up
 *       (no coordinated omission). Requests still queued or in flight at the end
 *       are counted as "late" and, with their age at the end, as latencies too.
 *
 *   closed loop loadgen -n COUNT -c CONNS [-H ...] HOST PORT PATH
 *       Send COUNT requests as fast as the answers come back (used to drive gwd
 *       under callgrind).
 *
 * Output: one line of key=value pairs (sent, ok, errors, late, rate, p50_us,
 * p90_us, p99_us, p999_us, max_us). Responses must carry Content-Length (gwd and
 * the nginx peers do); "Connection: close" answers reopen the connection.
 *
 * Build: cc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 1024
#define RBUF 65536

struct conn {
    int fd;
    int busy;          /* a request is outstanding */
    int connecting;
    int64_t due_ns;    /* intended send time of the outstanding request */
    size_t rlen;
    char rbuf[RBUF];
    long body_left;    /* -1: still reading the head */
    int close_after;
    int status;
};

static struct sockaddr_in addr;
static char req[8192];
static size_t reqlen;
static int ep;
static struct conn conns[MAXC];
static int nconns;

static int64_t *lat;        /* latencies in ns */
static size_t nlat, caplat;
static long n_ok, n_err, n_sent;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void add_lat(int64_t v)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) { perror("realloc"); exit(2); }
    }
    lat[nlat++] = v;
}

static int open_conn(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connecting = 1;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->busy = 0;
    c->rlen = 0;
    c->body_left = -1;
    c->close_after = 0;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void reopen(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    open_conn(c);
}

static int send_req(struct conn *c, int64_t due)
{
    ssize_t w = write(c->fd, req, reqlen);
    if (w != (ssize_t)reqlen) return -1; /* small request: all or nothing on loopback */
    c->busy = 1;
    c->due_ns = due;
    c->rlen = 0;
    c->body_left = -1;
    c->close_after = 0;
    n_sent++;
    return 0;
}

/* Parse what has arrived; returns 1 when a whole response is in, 0 when more is
 * needed, -1 on a malformed answer. */
static int parse(struct conn *c, int *status)
{
    if (c->body_left < 0) {
        char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!end) return c->rlen == RBUF ? -1 : 0;
        size_t headlen = (size_t)(end - c->rbuf) + 4;
        *status = 0;
        if (c->rlen >= 12) *status = atoi(c->rbuf + 9);
        long clen = -1;
        for (char *p = c->rbuf; p < end;) {
            char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
            if (!eol) break;
            if (eol - p > 15 && strncasecmp(p, "Content-Length:", 15) == 0) clen = atol(p + 15);
            if (eol - p > 11 && strncasecmp(p, "Connection:", 11) == 0 &&
                memmem(p, (size_t)(eol - p), "close", 5)) c->close_after = 1;
            p = eol + 2;
        }
        if (clen < 0) return -1;
        size_t have = c->rlen - headlen;
        if ((long)have >= clen) return 1;
        c->body_left = clen - (long)have;
        c->rlen = 0;
        return 0;
    }
    if ((long)c->rlen >= c->body_left) return 1;
    return 0;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!nlat) return 0;
    size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return (double)lat[i] / 1000.0;
}

int main(int argc, char **argv)
{
    double rate = 0, dur = 0;
    long count = 0;
    int opt;
    char hdrs[4096] = "";
    nconns = 16;
    while ((opt = getopt(argc, argv, "r:d:n:c:H:")) != -1) {
        switch (opt) {
        case 'r': rate = atof(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'H':
            strncat(hdrs, optarg, sizeof hdrs - strlen(hdrs) - 3);
            strcat(hdrs, "\r\n");
            break;
        default: goto usage;
        }
    }
    if (argc - optind != 3 || nconns < 1 || nconns > MAXC || (!count && (rate <= 0 || dur <= 0))) {
    usage:
        fprintf(stderr, "usage: loadgen (-r RATE -d SECONDS | -n COUNT) [-c CONNS] [-H HDR]... HOST PORT PATH\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
    inet_pton(AF_INET, argv[optind], &addr.sin_addr);
    reqlen = (size_t)snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n%s\r\n",
                              argv[optind + 2], argv[optind], argv[optind + 1], hdrs);
    ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++)
        if (open_conn(&conns[i]) < 0) { fprintf(stderr, "connect failed\n"); return 1; }

    /* Let the connections establish before the clock starts. */
    int64_t t_settle = now_ns() + 200000000LL;
    struct epoll_event evs[256];
    while (now_ns() < t_settle) {
        int n = epoll_wait(ep, evs, 256, 10);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->connecting && (evs[i].events & EPOLLOUT)) {
                c->connecting = 0;
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
    }

    int64_t start = now_ns();
    int64_t end = count ? INT64_MAX : start + (int64_t)(dur * 1e9);
    double interval = count ? 0 : 1e9 / rate;
    long next_i = 0;              /* index of the next request to become due */
    /* queue of due, unsent requests: in open loop, due times are start + i*interval,
     * so the queue is just the range [q_head, next_i). */
    long q_head = 0;
    long done = 0;

    for (;;) {
        int64_t t = now_ns();
        if (count) {
            /* closed loop: keep every idle connection busy until COUNT are sent */
            for (int i = 0; i < nconns && n_sent < count; i++)
                if (!conns[i].busy && !conns[i].connecting)
                    if (send_req(&conns[i], now_ns()) < 0) reopen(&conns[i]);
            if (done >= count) break;
        } else {
            if (t >= end) break;
            while (start + (int64_t)((double)next_i * interval) <= t) next_i++;
            for (int i = 0; i < nconns && q_head < next_i; i++) {
                struct conn *c = &conns[i];
                if (c->busy || c->connecting) continue;
                if (send_req(c, start + (int64_t)((double)q_head * interval)) < 0) { reopen(c); continue; }
                q_head++;
            }
        }
        /* Sleep precisely (epoll_pwait2 takes nanoseconds): until the next request
         * is due, or, when due requests wait for a connection, until an answer
         * frees one. Never spin: CPU 0 is shared with the mock backends. */
        struct timespec ts = { 0, 100000000 };
        if (!count) {
            int64_t wake = start + (int64_t)((double)next_i * interval);
            int idle = 0;
            for (int i = 0; i < nconns && !idle; i++) idle = !conns[i].busy && !conns[i].connecting;
            if (q_head < next_i && !idle) wake = end; /* wait for an answer */
            if (wake > end) wake = end;
            int64_t w = wake - now_ns();
            if (w < 0) w = 0;
            if (w > 100000000) w = 100000000;
            ts.tv_sec = 0;
            ts.tv_nsec = (long)w;
        }
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->connecting) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) { n_err++; reopen(c); continue; }
                if (evs[i].events & EPOLLOUT) {
                    c->connecting = 0;
                    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
                continue;
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            for (;;) {
                ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                if (r <= 0) {
                    if (c->busy) { n_err++; done++; add_lat(now_ns() - c->due_ns); }
                    reopen(c);
                    break;
                }
                c->rlen += (size_t)r;
                int pr;
                if (c->body_left >= 0) {
                    /* the head is in: only count body bytes */
                    if ((long)c->rlen >= c->body_left) pr = 1;
                    else { c->body_left -= (long)c->rlen; c->rlen = 0; pr = 0; }
                } else {
                    pr = parse(c, &c->status);
                }
                int status = c->status;
                if (pr < 0) { n_err++; done++; reopen(c); break; }
                if (pr == 1) {
                    add_lat(now_ns() - c->due_ns);
                    if (status >= 200 && status < 300) n_ok++; else n_err++;
                    done++;
                    c->busy = 0;
                    c->rlen = 0;
                    c->body_left = -1;
                    if (c->close_after) { reopen(c); }
                    break;
                }
            }
        }
    }
    int64_t tend = now_ns();
    /* What never came back is charged with its age at the end. */
    long late = 0;
    if (!count) {
        for (long q = q_head; q < next_i; q++) { add_lat(tend - (start + (int64_t)((double)q * interval))); late++; }
        for (int i = 0; i < nconns; i++)
            if (conns[i].busy) { add_lat(tend - conns[i].due_ns); late++; }
    }
    qsort(lat, nlat, sizeof *lat, cmp64);
    double secs = (double)(tend - start) / 1e9;
    printf("sent=%ld ok=%ld errors=%ld late=%ld rate=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f\n",
           n_sent, n_ok, n_err, late, (double)(n_ok + n_err) / secs, pct(0.50), pct(0.90), pct(0.99),
           pct(0.999), nlat ? (double)lat[nlat - 1] / 1000.0 : 0.0);
    return 0;
}
