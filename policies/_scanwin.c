/* The scan-window row loop of VectorDetector._scan_rows, in C (and, at the end, distinct_rows:
 * the same loop for a server's single window of int keys, the spam destinations).
 *
 * detect_vec.py's loop, row by row, with the same dict operations in the same order on the
 * same Python objects: the windows are plain dicts that the rest of the detector (the screen,
 * evaluate(), the evidence code) reads, so this module works through the C API on them
 * rather than keeping state of its own. Per row (server s, host a, pair k, time now):
 *
 *   seen = hs_l[s]; if None: new_scan(s); seen = hs_l[s]
 *   if seen.pop(a, None) is None:
 *       if len(seen) < caps[s]: seen[a] = now
 *       else: hosts_l[s].add(a, now)          # the eviction, in _Win.add
 *       if len(seen) >= th_h[s]: hot.add(s)
 *   else: seen[a] = now
 *   seen = ps_l[s]; k = a << 64 | (port & 2**64-1)
 *   if seen.pop(k, None) is None:
 *       if len(seen) < caps[s]: seen[k] = now; pg_l[s][a] = pg_l[s].get(a, 0) + 1
 *       else: pairs_l[s].add(k, now)
 *       if len(seen) >= th_p[s]: hot.add(s)
 *   else: seen[k] = now
 *
 * The keys are Python ints of the same values (a = hi << 64 | lo, non-negative; the pair
 * adds the port as 64 bits, -1 -> 2**64 - 1). A key's hash is computed once per row for its
 * stores and its group (the private _KnownHash calls of 3.11/3.12; the public ones, hashing
 * again, elsewhere); a pop is one lookup (_PyDict_Pop, PyDict_Pop from 3.13).
 *
 * Measured (bench/detect_vec.py): at a fleet's size the loop waits on memory more than it
 * computes, each row touching another server's dicts (perf: most of its time in the dict
 * lookups' cache misses), so C saves the interpreter's share only. Prefetching the next rows'
 * dicts and key tables measured no gain and is not done. A key wider than 64 bits is made
 * from its bytes (_PyLong_FromByteArray): 0.72 against 1.11 us a row for
 * PyLong_FromUnsignedLongLong with shifts and ors, on windows that fit the cache.
 *
 * A server's run of rows (consecutive rows of one server: _scan_rows sorts them so) skips
 * its middle sightings of a key when its windows cannot reach their cap in the run: the same
 * windows, times, orders, groups and hot set as taking every row (see plan_run). A SPAN
 * batch repeats each flow's keys: bench/capture.py measured the batch path 1.1x faster.
 *
 * An exception raised by .add or new_scan (or any failing call) stops the loop there and
 * propagates: the rows before it are done, as in the Python loop (in a run that skips, the
 * skipped touches before it are not; only broken count rules can raise there).
 *
 * scan_rows(srv, hi, lo, port, now, hs_l, ps_l, pg_l, hosts_l, pairs_l, caps, th_h, th_p,
 *           hot, new_scan) -> None
 *   srv int64, hi/lo uint64, port int64, now float64: C-contiguous, one row each, same length.
 *   The eight lists are indexed by server (a negative or too large index: IndexError).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030D0000
#define KNOWN_HASH 1
#else
#define KNOWN_HASH 0
#endif

static PyObject *str_add;  /* "add" */
/* The entry point running, for error messages only: "scan_rows" or "distinct_rows", set on
 * entry (under the GIL; a callback that calls the other one leaves its name behind, which
 * can only mislabel a later message of the same call). */
static const char *fn_name = "scan_rows";
static PyObject *one;      /* 1 */

/* A key's int from little-endian 64-bit words (n of them), the highest nonzero word first
 * trimmed: PyLong_FromUnsignedLongLong when it fits one word. */
static PyObject *
key_from_words(const uint64_t *w, int n)
{
    while (n > 1 && w[n - 1] == 0)
        n--;
    if (n == 1)
        return PyLong_FromUnsignedLongLong(w[0]);
    unsigned char buf[24];
    for (int j = 0; j < n; j++)
        for (int b = 0; b < 8; b++)
            buf[8 * j + b] = (unsigned char)(w[j] >> (8 * b));
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(
        buf, (size_t)(8 * n), Py_ASNATIVEBYTES_LITTLE_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
#else
    return _PyLong_FromByteArray(buf, (size_t)(8 * n), 1, 0);
#endif
}

/* len(d) < lim (op Py_LT) or len(d) >= lim (op Py_GE), as Python compares them: exact ints
 * directly, anything else through rich comparison. 1/0, -1 with an exception set. */
static int
len_cmp(Py_ssize_t n, PyObject *lim, int op)
{
    if (PyLong_CheckExact(lim)) {
        int ovf;
        long long v = PyLong_AsLongLongAndOverflow(lim, &ovf);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (!ovf)
            return op == Py_LT ? (long long)n < v : (long long)n >= v;
    }
    PyObject *nn = PyLong_FromSsize_t(n);
    if (nn == NULL)
        return -1;
    int r = PyObject_RichCompareBool(nn, lim, op);
    Py_DECREF(nn);
    return r;
}

static int
store(PyObject *d, PyObject *key, Py_hash_t h, PyObject *val)
{
#if KNOWN_HASH
    return _PyDict_SetItem_KnownHash(d, key, val, h);
#else
    (void)h;
    return PyDict_SetItem(d, key, val);
#endif
}

/* d.pop(key, None) is None, the key then stored at the end with value now when it was there
 * (popped not None). Returns 1 when the key was absent (nothing stored: the caller decides),
 * 0 when it was re-sighted (popped and stored again), -1 on error. */
static int
pop_or_touch(PyObject *d, PyObject *key, Py_hash_t h, PyObject *now)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *v;
    if (PyDict_Pop(d, key, &v) < 0)
        return -1;
#else
    PyObject *v = _PyDict_Pop(d, key, Py_None);  /* one lookup for the pop */
    if (v == NULL)
        return -1;
#endif
    int absent = v == NULL || v == Py_None;
    Py_XDECREF(v);
    if (absent)
        return 1;
    return store(d, key, h, now) < 0 ? -1 : 0;
}

/* groups[g] = groups.get(g, 0) + 1 */
static int
group_inc(PyObject *groups, PyObject *g, Py_hash_t h)
{
#if KNOWN_HASH
    PyObject *v = _PyDict_GetItem_KnownHash(groups, g, h);
#else
    PyObject *v = PyDict_GetItemWithError(groups, g);
#endif
    PyObject *nv;
    if (v == NULL) {
        if (PyErr_Occurred())
            return -1;
        nv = one;
        Py_INCREF(nv);
    } else {
        nv = PyNumber_Add(v, one);
        if (nv == NULL)
            return -1;
    }
    int r = store(groups, g, h, nv);
    Py_DECREF(nv);
    return r;
}

/* lst[s] as a new reference, which must be an exact dict (or None when none_ok: *out NULL). */
static int
list_item(PyObject *lst, Py_ssize_t s, const char *name, int dict_only, PyObject **out)
{
    if (s < 0 || s >= PyList_GET_SIZE(lst)) {
        PyErr_Format(PyExc_IndexError, "%s: server %zd out of range of %s", fn_name, s, name);
        return -1;
    }
    PyObject *o = PyList_GET_ITEM(lst, s);
    if (dict_only && !PyDict_CheckExact(o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s[%zd] is %.100s, not a dict", fn_name, name, s,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    Py_INCREF(o);
    *out = o;
    return 0;
}

/* obj.add(key, now) */
static int
call_add(PyObject *lst, Py_ssize_t s, const char *name, PyObject *key, PyObject *now)
{
    PyObject *win;
    if (list_item(lst, s, name, 0, &win) < 0)
        return -1;
    PyObject *args[3] = {win, key, now};
    PyObject *r = PyObject_VectorcallMethod(str_add, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                            NULL);
    Py_DECREF(win);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int
get_buf(PyObject *o, Py_buffer *b, const char *name, const char *kinds, Py_ssize_t n)
{
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = b->format ? b->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (b->itemsize != 8 || strlen(f) != 1 || strchr(kinds, *f) == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a contiguous array of 8-byte '%s', "
                     "not '%s' of %zd bytes", fn_name, name, kinds, b->format ? b->format : "B",
                     b->itemsize);
        PyBuffer_Release(b);
        return -1;
    }
    if (n >= 0 && b->len / 8 != n) {
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd rows, srv %zd", fn_name, name,
                     b->len / 8, n);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static int
is_list(PyObject *o, const char *name)
{
    if (!PyList_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a list, not %.100s", fn_name, name,
                     Py_TYPE(o)->tp_name);
        return 0;
    }
    return 1;
}

/* The per-row arrays of a call: buffers taken in order (srv first: its length is the rows'),
 * all released by rows_release, also after a failure part-way. */
typedef struct {
    Py_buffer b[5];
    int held;
    Py_ssize_t n;
} Rows;

static void
rows_release(Rows *r)
{
    while (r->held > 0)
        PyBuffer_Release(&r->b[--r->held]);
}

static int
rows_get(Rows *r, int count, PyObject *const *objs, const char *const *names,
         const char *const *kinds)
{
    r->held = 0;
    r->n = -1;
    for (int j = 0; j < count; j++) {
        if (get_buf(objs[j], &r->b[j], names[j], kinds[j], r->n) < 0) {
            rows_release(r);
            return -1;
        }
        r->held++;
        if (j == 0)
            r->n = r->b[0].len / 8;
    }
    return 0;
}

/* hot a set and the window maker callable, or a TypeError naming them: 0 or -1. */
static int
check_hot_maker(PyObject *hot, PyObject *maker, const char *maker_name)
{
    if (!Py_IS_TYPE(hot, &PySet_Type)) {
        PyErr_Format(PyExc_TypeError, "%s: hot must be a set, not %.100s", fn_name,
                     Py_TYPE(hot)->tp_name);
        return -1;
    }
    if (!PyCallable_Check(maker)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be callable", fn_name, maker_name);
        return -1;
    }
    return 0;
}

/* Server s's int, made once per run of rows of one server (*cur, a new reference, is the
 * last one made, for *last; the caller drops it at the end). NULL with an exception. */
static PyObject *
server_int(int64_t s, int64_t *last, PyObject **cur)
{
    if (*cur == NULL || s != *last) {
        Py_XDECREF(*cur);
        *cur = PyLong_FromLongLong(s);
        *last = s;
    }
    return *cur;
}

/* lst[s] made by maker(s) when it is None (a server's first row): 0, or -1 with an exception. */
static int
ensure_window(PyObject *lst, const char *name, Py_ssize_t s, PyObject *s_obj, PyObject *maker)
{
    if (s < 0 || s >= PyList_GET_SIZE(lst)) {
        PyErr_Format(PyExc_IndexError, "%s: server %zd out of range of %s", fn_name, s, name);
        return -1;
    }
    if (PyList_GET_ITEM(lst, s) != Py_None)
        return 0;
    PyObject *res = PyObject_CallOneArg(maker, s_obj);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    if (s >= PyList_GET_SIZE(lst) || PyList_GET_ITEM(lst, s) == Py_None) {
        PyErr_Format(PyExc_AssertionError, "%s: server %zd's window was not made", fn_name, s);
        return -1;
    }
    return 0;
}

/* One key into one window of server s (its dict `seen`), _Win.add inlined but for an eviction:
 *
 *   if seen.pop(key, None) is None:
 *       if len(seen) < caps[s]: seen[key] = now       (*stored = 1)
 *       else: win_l[s].add(key, now)                  (the eviction, in _Win.add)
 *       if len(seen) >= th_l[s]: hot.add(s)
 *   else: seen[key] = now
 *
 * 0, or -1 with an exception set. */
static int
window_key(PyObject *seen, PyObject *key, Py_hash_t h, PyObject *now, Py_ssize_t s,
           PyObject *s_obj, PyObject *caps, PyObject *win_l, const char *win_name,
           PyObject *th_l, const char *th_name, PyObject *hot, int *stored)
{
    PyObject *lim = NULL;
    *stored = 0;
    int r = pop_or_touch(seen, key, h, now);
    if (r <= 0)
        return r;
    if (list_item(caps, s, "caps", 0, &lim) < 0)
        return -1;
    r = len_cmp(PyDict_GET_SIZE(seen), lim, Py_LT);
    Py_CLEAR(lim);
    if (r < 0)
        return -1;
    if (r) {
        if (store(seen, key, h, now) < 0)
            return -1;
        *stored = 1;
    } else if (call_add(win_l, s, win_name, key, now) < 0) {
        return -1;
    }
    if (list_item(th_l, s, th_name, 0, &lim) < 0)
        return -1;
    r = len_cmp(PyDict_GET_SIZE(seen), lim, Py_GE);
    Py_CLEAR(lim);
    if (r < 0 || (r && PySet_Add(hot, s_obj) < 0))
        return -1;
    return 0;
}

/* One scan row: the host into the hosts window, then the (host, port) pair into the pairs
 * window, whose groups count a host's pairs (a stored pair only: an eviction's add counts it
 * in _Win.add). 0 or -1 (exception set). Owns nothing on return. */
static int
one_row(Py_ssize_t s, PyObject *s_obj, uint64_t hi, uint64_t lo, int64_t port, double t,
        PyObject *hs_l, PyObject *ps_l, PyObject *pg_l, PyObject *hosts_l, PyObject *pairs_l,
        PyObject *caps, PyObject *th_h, PyObject *th_p, PyObject *hot, PyObject *new_scan)
{
    PyObject *seen = NULL, *a = NULL, *k = NULL, *now = NULL, *groups = NULL;
    int rc = -1, stored;
    Py_hash_t ha, hk;

    if (ensure_window(hs_l, "hs_l", s, s_obj, new_scan) < 0)
        return -1;
    if (list_item(hs_l, s, "hs_l", 1, &seen) < 0)
        return -1;
    {
        uint64_t w[2] = {lo, hi};
        a = key_from_words(w, 2);
    }
    if (a == NULL || (ha = PyObject_Hash(a)) == -1)
        goto done;
    now = PyFloat_FromDouble(t);
    if (now == NULL)
        goto done;
    if (window_key(seen, a, ha, now, s, s_obj, caps, hosts_l, "hosts_l", th_h, "th_h", hot,
                   &stored) < 0)
        goto done;
    Py_CLEAR(seen);
    if (list_item(ps_l, s, "ps_l", 1, &seen) < 0)
        goto done;
    {
        uint64_t w[3] = {(uint64_t)port, lo, hi};
        k = key_from_words(w, 3);
    }
    if (k == NULL || (hk = PyObject_Hash(k)) == -1)
        goto done;
    if (window_key(seen, k, hk, now, s, s_obj, caps, pairs_l, "pairs_l", th_p, "th_p", hot,
                   &stored) < 0)
        goto done;
    if (stored && (list_item(pg_l, s, "pg_l", 1, &groups) < 0 || group_inc(groups, a, ha) < 0))
        goto done;
    rc = 0;
done:
    Py_XDECREF(seen);
    Py_XDECREF(groups);
    Py_XDECREF(a);
    Py_XDECREF(k);
    Py_XDECREF(now);
    return rc;
}

/* A run of one server's rows, taken without the rows that change nothing a later row does
 * not change again. In a window that cannot reach its cap in this run (no eviction: every
 * row only touches or adds keys), a row whose (host, port) key was sighted earlier in the
 * run and will be sighted again later is a touch (pop and store again) that the later
 * sighting repeats: the key ends at its last sighting's time and place in each dict either
 * way, the dicts' lengths (and so every count rule's check, made when a key is new) move
 * only at first sightings, and the groups count stored new pairs only. So such a middle
 * sighting is skipped: a flow's packets and a flood's target repeat a key thousands of
 * times in a SPAN batch. The plan (first pass) numbers each row's key; the run is
 * deduplicated only when len(hosts) and len(pairs) plus the run's distinct keys stay within
 * the cap, read without raising (anything unusual: the rows are all taken, as before). Every
 * skipped row lies between two taken rows of its own run, so an exception raised by a taken
 * row leaves only touches of this run undone that the Python loop would have done: it can
 * come from new_scan (the run's first row, before anything is skipped) or from broken
 * count rules, never from an eviction (there is none). */
#define DEDUP_MIN 8 /* rows of one server in a run from which it is planned */
static int skip_on = 1; /* skip_repeats(False) takes every row (bench/capture.py's baseline) */

typedef struct {
    uint64_t hi, lo, port;
    Py_ssize_t last; /* the key's last row in the run */
    char used, begun;
} RunKey;

typedef struct {
    RunKey *t;
    Py_ssize_t *slot; /* per row of the run: its key's entry in t */
    size_t mask;
} RunPlan;

static void
plan_free(RunPlan *p)
{
    PyMem_Free(p->t);
    PyMem_Free(p->slot);
    p->t = NULL;
    p->slot = NULL;
}

/* Plan rows [b, e) (keys (hi, lo, port), or (hi, lo) when port is NULL): the number of
 * distinct keys, or -1 with MemoryError set. */
static Py_ssize_t
plan_run(RunPlan *p, const uint64_t *hi, const uint64_t *lo, const int64_t *port, Py_ssize_t b,
         Py_ssize_t e)
{
    size_t n = (size_t)(e - b), cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    p->mask = cap - 1;
    p->t = PyMem_Calloc(cap, sizeof(RunKey));
    p->slot = PyMem_Malloc(n * sizeof(Py_ssize_t));
    if (p->t == NULL || p->slot == NULL) {
        plan_free(p);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t distinct = 0;
    for (Py_ssize_t i = b; i < e; i++) {
        uint64_t pt = port == NULL ? 0 : (uint64_t)port[i];
        uint64_t x = (hi[i] * 0x9E3779B97F4A7C15ULL) ^ (lo[i] * 0xC2B2AE3D27D4EB4FULL)
                     ^ (pt * 0x165667B19E3779F9ULL);
        size_t j = (size_t)(x ^ (x >> 31)) & p->mask;
        RunKey *k = &p->t[j];
        while (k->used && !(k->hi == hi[i] && k->lo == lo[i] && k->port == pt)) {
            j = (j + 1) & p->mask;
            k = &p->t[j];
        }
        if (!k->used) {
            k->used = 1;
            k->hi = hi[i];
            k->lo = lo[i];
            k->port = pt;
            distinct++;
        }
        k->last = i;
        p->slot[i - b] = (Py_ssize_t)j;
    }
    return distinct;
}

/* len(lst[s]) when it is an exact dict, else -1; never raises. */
static Py_ssize_t
dict_len_at(PyObject *lst, Py_ssize_t s)
{
    if (s < 0 || s >= PyList_GET_SIZE(lst))
        return -1;
    PyObject *d = PyList_GET_ITEM(lst, s);
    return PyDict_CheckExact(d) ? PyDict_GET_SIZE(d) : -1;
}

/* Whether server s's windows hold `distinct` more keys without reaching caps[s] (an exact int
 * in range); 0 for anything else. Never raises. */
static int
run_fits(PyObject *hs_l, PyObject *ps_l, PyObject *caps, Py_ssize_t s, Py_ssize_t distinct)
{
    /* ps_l NULL: one window (distinct_rows). */
    Py_ssize_t nh = dict_len_at(hs_l, s), np_ = ps_l == NULL ? nh : dict_len_at(ps_l, s);
    if (nh < 0 || np_ < 0 || s >= PyList_GET_SIZE(caps))
        return 0;
    PyObject *lim = PyList_GET_ITEM(caps, s);
    if (!PyLong_CheckExact(lim))
        return 0;
    int ovf;
    long long cap = PyLong_AsLongLongAndOverflow(lim, &ovf);
    if (cap == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (ovf)
        return ovf > 0;
    /* The last new key is stored at len + distinct - 1, which must stay below the cap. */
    return (long long)(nh > np_ ? nh : np_) + (long long)distinct - 1 < cap;
}

/* One row k of server s (its int s_obj) through the caller's row function. */
typedef int (*RowFn)(void *ctx, Py_ssize_t k, Py_ssize_t s, PyObject *s_obj);

/* The rows run by run (a run: consecutive rows of one server), each row through fn, a run's
 * middle sightings skipped where its windows (first_l[s] and, when not NULL, second_l[s])
 * cannot reach caps[s] (see plan_run; port NULL: keys are hosts). A run of DEDUP_MIN rows or
 * more has its window made first (maker(s)), as its first row would. 0, or -1 with an
 * exception set (the rows before the failing one done). */
static int
for_runs(const int64_t *srv, const uint64_t *hi, const uint64_t *lo, const int64_t *port,
         Py_ssize_t n, PyObject *first_l, const char *first_name, PyObject *second_l,
         PyObject *caps, PyObject *maker, RowFn fn, void *ctx)
{
    PyObject *s_obj = NULL;
    int64_t last = 0;
    int err = 0;
    Py_ssize_t i = 0;
    while (i < n && !err) {
        int64_t s = srv[i];
        Py_ssize_t e = i + 1;
        while (e < n && srv[e] == s)
            e++;
        if (server_int(s, &last, &s_obj) == NULL) {
            err = 1;
            break;
        }
        RunPlan plan = {NULL, NULL, 0};
        int dedup = 0;
        if (skip_on && e - i >= DEDUP_MIN) {
            Py_ssize_t distinct;
            if (ensure_window(first_l, first_name, (Py_ssize_t)s, s_obj, maker) < 0
                || (distinct = plan_run(&plan, hi, lo, port, i, e)) < 0) {
                err = 1;
                break;
            }
            dedup = run_fits(first_l, second_l, caps, (Py_ssize_t)s, distinct);
        }
        for (Py_ssize_t k = i; k < e && !err; k++) {
            if (dedup) {
                RunKey *key = &plan.t[plan.slot[k - i]];
                if (key->begun && key->last != k)
                    continue; /* a middle sighting: the key's last row repeats it */
                key->begun = 1;
            }
            err = fn(ctx, k, (Py_ssize_t)s, s_obj) < 0;
        }
        plan_free(&plan);
        i = e;
    }
    Py_XDECREF(s_obj);
    return err ? -1 : 0;
}

typedef struct {
    const uint64_t *hi, *lo;
    const int64_t *port;
    const double *now;
    PyObject *hs_l, *ps_l, *pg_l, *hosts_l, *pairs_l, *caps, *th_h, *th_p, *hot, *new_scan;
} ScanCtx;

static int
scan_row(void *p, Py_ssize_t k, Py_ssize_t s, PyObject *s_obj)
{
    ScanCtx *c = p;
    return one_row(s, s_obj, c->hi[k], c->lo[k], c->port[k], c->now[k], c->hs_l, c->ps_l,
                   c->pg_l, c->hosts_l, c->pairs_l, c->caps, c->th_h, c->th_p, c->hot,
                   c->new_scan);
}

static PyObject *
scan_rows(PyObject *self, PyObject *args)
{
    PyObject *o_srv, *o_hi, *o_lo, *o_port, *o_now;
    PyObject *hs_l, *ps_l, *pg_l, *hosts_l, *pairs_l, *caps, *th_h, *th_p, *hot, *new_scan;
    (void)self;
    fn_name = "scan_rows";
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOO:scan_rows", &o_srv, &o_hi, &o_lo, &o_port,
                          &o_now, &hs_l, &ps_l, &pg_l, &hosts_l, &pairs_l, &caps, &th_h, &th_p,
                          &hot, &new_scan))
        return NULL;
    if (!is_list(hs_l, "hs_l") || !is_list(ps_l, "ps_l") || !is_list(pg_l, "pg_l")
        || !is_list(hosts_l, "hosts_l") || !is_list(pairs_l, "pairs_l") || !is_list(caps, "caps")
        || !is_list(th_h, "th_h") || !is_list(th_p, "th_p"))
        return NULL;
    if (check_hot_maker(hot, new_scan, "new_scan") < 0)
        return NULL;
    static const char *const names[] = {"srv", "hi", "lo", "port", "now"};
    static const char *const kinds[] = {"ql", "QL", "QL", "ql", "d"};
    PyObject *const objs[] = {o_srv, o_hi, o_lo, o_port, o_now};
    Rows r;
    if (rows_get(&r, 5, objs, names, kinds) < 0)
        return NULL;
    const int64_t *srv = (const int64_t *)r.b[0].buf;
    const uint64_t *hi = (const uint64_t *)r.b[1].buf, *lo = (const uint64_t *)r.b[2].buf;
    const int64_t *port = (const int64_t *)r.b[3].buf;
    const double *now = (const double *)r.b[4].buf;
    ScanCtx ctx = {hi, lo, port, now, hs_l, ps_l, pg_l, hosts_l, pairs_l, caps, th_h, th_p,
                   hot, new_scan};
    int err = for_runs(srv, hi, lo, port, r.n, hs_l, "hs_l", ps_l, caps, new_scan, scan_row,
                       &ctx) < 0;
    rows_release(&r);
    if (err)
        return NULL;
    Py_RETURN_NONE;
}

/* distinct_rows: one single-key window per server (the spam destinations), the hosts half of
 * scan_rows' row on its own (see the header of detect_vec._distinct_loop_py):
 *
 *   seen = seen_l[s]; if None: new_win(s); seen = seen_l[s]
 *   if seen.pop(a, None) is None:
 *       if len(seen) < caps[s]: seen[a] = now
 *       else: win_l[s].add(a, now)            # the eviction, in _Win.add
 *       if len(seen) >= th[s]: hot.add(s)
 *   else: seen[a] = now
 *
 * distinct_rows(srv, hi, lo, now, seen_l, win_l, caps, th, hot, new_win) -> None
 *   srv int64, hi/lo uint64, now float64: C-contiguous, one row each, same length. */
static int
distinct_row(Py_ssize_t s, PyObject *s_obj, uint64_t hi, uint64_t lo, double t,
             PyObject *seen_l, PyObject *win_l, PyObject *caps, PyObject *th, PyObject *hot,
             PyObject *new_win)
{
    PyObject *seen = NULL, *a = NULL, *now = NULL;
    int rc = -1, stored;
    Py_hash_t ha;

    if (ensure_window(seen_l, "seen_l", s, s_obj, new_win) < 0)
        return -1;
    if (list_item(seen_l, s, "seen_l", 1, &seen) < 0)
        return -1;
    {
        uint64_t w[2] = {lo, hi};
        a = key_from_words(w, 2);
    }
    if (a == NULL || (ha = PyObject_Hash(a)) == -1)
        goto done;
    now = PyFloat_FromDouble(t);
    if (now == NULL)
        goto done;
    if (window_key(seen, a, ha, now, s, s_obj, caps, win_l, "win_l", th, "th", hot,
                   &stored) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(seen);
    Py_XDECREF(a);
    Py_XDECREF(now);
    return rc;
}

typedef struct {
    const uint64_t *hi, *lo;
    const double *now;
    PyObject *seen_l, *win_l, *caps, *th, *hot, *new_win;
} DistinctCtx;

static int
distinct_one(void *p, Py_ssize_t k, Py_ssize_t s, PyObject *s_obj)
{
    DistinctCtx *c = p;
    return distinct_row(s, s_obj, c->hi[k], c->lo[k], c->now[k], c->seen_l, c->win_l, c->caps,
                        c->th, c->hot, c->new_win);
}

static PyObject *
distinct_rows(PyObject *self, PyObject *args)
{
    PyObject *o_srv, *o_hi, *o_lo, *o_now, *seen_l, *win_l, *caps, *th, *hot, *new_win;
    (void)self;
    fn_name = "distinct_rows";
    if (!PyArg_ParseTuple(args, "OOOOOOOOOO:distinct_rows", &o_srv, &o_hi, &o_lo, &o_now,
                          &seen_l, &win_l, &caps, &th, &hot, &new_win))
        return NULL;
    if (!is_list(seen_l, "seen_l") || !is_list(win_l, "win_l") || !is_list(caps, "caps")
        || !is_list(th, "th"))
        return NULL;
    if (check_hot_maker(hot, new_win, "new_win") < 0)
        return NULL;
    static const char *const names[] = {"srv", "hi", "lo", "now"};
    static const char *const kinds[] = {"ql", "QL", "QL", "d"};
    PyObject *const objs[] = {o_srv, o_hi, o_lo, o_now};
    Rows r;
    if (rows_get(&r, 4, objs, names, kinds) < 0)
        return NULL;
    const int64_t *srv = (const int64_t *)r.b[0].buf;
    const uint64_t *hi = (const uint64_t *)r.b[1].buf, *lo = (const uint64_t *)r.b[2].buf;
    const double *now = (const double *)r.b[3].buf;
    DistinctCtx ctx = {hi, lo, now, seen_l, win_l, caps, th, hot, new_win};
    int err = for_runs(srv, hi, lo, NULL, r.n, seen_l, "seen_l", NULL, caps, new_win,
                       distinct_one, &ctx) < 0;
    rows_release(&r);
    if (err)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
skip_repeats(PyObject *Py_UNUSED(self), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    int was = skip_on;
    skip_on = on;
    return PyBool_FromLong(was);
}

static PyMethodDef methods[] = {
    {"skip_repeats", skip_repeats, METH_O,
     "skip_repeats(on) -> was: whether runs skip their middle sightings (see plan_run); on "
     "by default, off only to measure or test against taking every row."},
    {"scan_rows", scan_rows, METH_VARARGS,
     "scan_rows(srv, hi, lo, port, now, hs_l, ps_l, pg_l, hosts_l, pairs_l, caps, th_h, th_p, "
     "hot, new_scan): VectorDetector._scan_rows' row loop (see policies/_scanwin.c)."},
    {"distinct_rows", distinct_rows, METH_VARARGS,
     "distinct_rows(srv, hi, lo, now, seen_l, win_l, caps, th, hot, new_win): "
     "VectorDetector._spam_rows' row loop (see policies/_scanwin.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scanwin_c",
    "The scan-window and spam-window row loops of VectorDetector, in C (policies/_scanwin.c).",
    -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__scanwin_c(void)
{
    if (str_add == NULL && (str_add = PyUnicode_InternFromString("add")) == NULL)
        return NULL;
    if (one == NULL && (one = PyLong_FromLong(1)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
