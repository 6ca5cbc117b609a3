/* The sFlow batch walk and header parse of the columnar decode (drivers/sflow/cwalk.py).
 *
 * batch._walk_buffer follows each datagram's chain of sample lengths with numpy, k-major (one
 * round of numpy calls per sample index), and batch._columns_walked then parses every raw header
 * in bulk (~70 numpy calls over the batch). Both are per-sample steps C does in a few tens of
 * ns. This file does exactly what those two do, datagram by datagram, and writes the same
 * values; the numpy code stays as the fallback and as the twin it is tested against
 * (tests/unit/test_sflow_cwalk.py). Loaded with ctypes, so no Python headers.
 *
 * Every read is checked against its datagram, and a datagram against the buffer: nothing
 * outside [buf, buf + buf_len) is read, whatever the pad after the batch holds; a header byte
 * past the sampled header reads as 0 (only rows marked slow, parsed again by parse_tuple, can
 * depend on one). Nothing is written past an output's capacity.
 *
 * sw_seq, at the end, is sequence.py ColumnSequenceTracker's batch walk (its own comment).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HEAD 28u              /* datagram header of an IPv4 agent */
#define MIN_FLOW 64u          /* 8 + 32 + 8 + 16: the smallest regular flow sample */
#define RAW_HEADER_FIXED 16u
#define SFLOW_VERSION 5u
#define ADDRESS_IPV4 1u
#define FLOW_SAMPLE 1u
#define COUNTER_SAMPLE 2u
#define COUNTER_SAMPLE_EXPANDED 4u
#define FLOW_RECORD_RAW_HEADER 1u
#define HEADER_ETHERNET 1u
#define HEADER_IPV4 11u
#define HEADER_IPV6 12u
#define NONE (-1)
#define V4_MAPPED 0xFFFF00000000ull

/* Row columns of the output (cwalk.py names them in the same order). */
enum {
    C_DG, C_SK, C_SA, C_SEQ, C_SID, C_RATE, C_POOL, C_IN, C_OUT, C_HPROTO, C_FRAME, C_HL,
    C_IPVER, C_PROTO, C_SPORT, C_DPORT, C_FLAGS, C_ICMP, C_SLOW, C_SRC_HI, C_SRC_LO, C_DST_HI,
    C_DST_LO, N_COLS
};
/* Counter columns: datagram, absolute offset of the type word, format, sample index. */
enum { K_DG, K_SA, K_FMT, K_SK, N_KCOLS };

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BSWAP32(x) __builtin_bswap32(x)
#define BSWAP64(x) __builtin_bswap64(x)
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define BSWAP32(x) (x)
#define BSWAP64(x) (x)
#endif

static uint32_t be32(const uint8_t *p)
{
#ifdef BSWAP32
    uint32_t v;
    memcpy(&v, p, 4);
    return BSWAP32(v);
#else
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
#endif
}

/* Byte `at` of a header of `hl` bytes; 0 past its end. */
static int64_t hbyte(const uint8_t *h, int64_t hl, int64_t at)
{
    return at >= 0 && at < hl ? h[at] : 0;
}

static int64_t hbe16(const uint8_t *h, int64_t hl, int64_t at)
{
    if (at >= 0 && at + 2 <= hl)
        return (int64_t)h[at] << 8 | h[at + 1];
    return hbyte(h, hl, at) << 8 | hbyte(h, hl, at + 1);
}

static uint64_t hbe64(const uint8_t *h, int64_t hl, int64_t at)
{
#ifdef BSWAP64
    if (at >= 0 && at + 8 <= hl) {
        uint64_t v;
        memcpy(&v, h + at, 8);
        return BSWAP64(v);
    }
#endif
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (uint64_t)hbyte(h, hl, at + i);
    return v;
}

static int is_vlan(int64_t et) { return et == 0x8100 || et == 0x88A8 || et == 0x9100; }

static int ipv6_ext(int64_t p)
{
    return p == 0 || p == 43 || p == 44 || p == 51 || p == 60 || p == 135 || p == 139
        || p == 140;
}

/* batch._columns_walked's bulk parse of one raw header (packets.parse_tuple's fast cases),
 * into row r of the column-major output. */
static void parse_header(const uint8_t *h, int64_t hl, int64_t hproto, int64_t *out,
                         int64_t cap, int64_t r)
{
#define COL(c) out[(int64_t)(c) * cap + r]
    int eth = hproto == HEADER_ETHERNET;
    int slow = !(eth || hproto == HEADER_IPV4 || hproto == HEADER_IPV6);
    int64_t off = 0, want;
    if (eth) {
        slow |= hl < 14;
        int64_t et = hbe16(h, hl, 12);
        if (is_vlan(et)) {
            slow |= hl < 18;
            et = hbe16(h, hl, 16);
            slow |= is_vlan(et);
            off = 18;
        } else {
            off = 14;
        }
        want = et == 0x0800 ? 4 : et == 0x86DD ? 6 : 0;
    } else {
        want = hproto == HEADER_IPV4 ? 4 : 6;
    }
    int v4 = want == 4, v6 = want == 6, ipv = v4 || v6;
    int64_t proto = NONE, sport = NONE, dport = NONE, flags = NONE, icmp = NONE;
    uint64_t src_hi = 0, src_lo = 0, dst_hi = 0, dst_lo = 0;
    if (ipv) {
        slow |= off + (v4 ? 20 : 40) > hl;
        int64_t verihl = hbyte(h, hl, off);
        slow |= (verihl >> 4) != (v4 ? 4 : 6);
        int64_t ihl = (verihl & 0x0F) * 4;
        if (v4)
            slow |= ihl < 20;
        proto = hbyte(h, hl, off + (v4 ? 9 : 6));
        if (v6)
            slow |= ipv6_ext(proto);
        int l4 = v6 || (hbe16(h, hl, off + 6) & 0x1FFF) == 0;
        int64_t p = off + (v4 ? ihl : 40);
        int ports = l4 && (proto == 6 || proto == 17 || proto == 132);
        int tcp = ports && proto == 6;
        int ic = l4 && (proto == 1 || proto == 58);
        slow |= (ports && p + 4 > hl) || (tcp && p + 14 > hl) || (ic && p + 2 > hl);
        if (ports) {
            sport = hbe16(h, hl, p);
            dport = hbe16(h, hl, p + 2);
        }
        if (tcp)
            flags = hbyte(h, hl, p + 13);
        if (ic)
            icmp = hbyte(h, hl, p);
        if (v4) {
            uint64_t sd = hbe64(h, hl, off + 12);
            src_lo = (sd >> 32) | V4_MAPPED;
            dst_lo = (sd & 0xFFFFFFFFu) | V4_MAPPED;
        } else if (!slow) {
            src_hi = hbe64(h, hl, off + 8);
            src_lo = hbe64(h, hl, off + 16);
            dst_hi = hbe64(h, hl, off + 24);
            dst_lo = hbe64(h, hl, off + 32);
        }
    }
    COL(C_IPVER) = ipv ? want : NONE;
    COL(C_PROTO) = proto;
    COL(C_SPORT) = sport;
    COL(C_DPORT) = dport;
    COL(C_FLAGS) = flags;
    COL(C_ICMP) = icmp;
    COL(C_SLOW) = slow;
    COL(C_SRC_HI) = (int64_t)src_hi;
    COL(C_SRC_LO) = (int64_t)src_lo;
    COL(C_DST_HI) = (int64_t)dst_hi;
    COL(C_DST_LO) = (int64_t)dst_lo;
#undef COL
}

/* Walks datagrams i = 0..n of `buf` (datagram i: lens[i] bytes from starts[i]) as
 * batch._walk_buffer does, and parses the header of each flow sample of the datagrams it takes
 * as batch._columns_walked does.
 *
 * eligible (NULL: all): datagrams whose receive time the exact decoder must judge are 0.
 * counters: step over counter samples instead of leaving their datagram to the exact decoder;
 * they are reported in ctrs in datagram order, each with its sample index (the caller sorts
 * them k-major, the order the numpy walk meets them in).
 * Writes ok[i] (1: taken), count[i] (the header's sample count, 0 when not read), the rows of
 * the taken datagrams' flow samples in datagram then sample order into `rows` (N_COLS columns
 * of row_cap each) and their counter samples into `ctrs` (N_KCOLS columns of ctr_cap each),
 * counted in *n_ctr. Returns the number of rows, or -1 when a capacity is too small. */
int64_t sw_walk(const uint8_t *buf, uint64_t buf_len, const int64_t *starts,
                const int64_t *lens, int64_t n, const uint8_t *eligible, int32_t counters,
                int64_t row_cap, int64_t *rows, int64_t ctr_cap, int64_t *ctrs,
                int64_t *n_ctr, uint8_t *ok, int64_t *count)
{
    int64_t m = 0, nc = 0;
    for (int64_t i = 0; i < n; i++) {
        ok[i] = 0;
        count[i] = 0;
        int64_t st = starts[i], dl = lens[i];
        if (st < 0 || dl < (int64_t)HEAD || (dl & 3) || (uint64_t)st > buf_len
            || (uint64_t)dl > buf_len - (uint64_t)st)
            continue;
        const uint8_t *d = buf + st;
        int64_t cn = be32(d + 24);
        count[i] = cn;
        if (be32(d) != SFLOW_VERSION || be32(d + 4) != ADDRESS_IPV4
            || cn > ((dl - (int64_t)HEAD) >> 3) || (cn == 0 && dl != (int64_t)HEAD)
            || (eligible != NULL && !eligible[i]))
            continue;
        /* Rows and counters of this datagram are written from m0 and nc0 on, and dropped
         * again if a later sample turns it away. */
        int64_t m0 = m, nc0 = nc;
        int64_t o = HEAD;
        int good_dg = 1;
        for (int64_t k = 0; k < cn; k++) {
            /* Inside its datagram and long enough to be read as a regular flow sample. */
            if (o + (int64_t)MIN_FLOW > dl) {
                good_dg = 0;
                break;
            }
            const uint8_t *s = d + o;
            int64_t slen = be32(s + 4);
            int64_t end = o + 8 + slen;
            if ((slen & 3) || end > dl) {
                good_dg = 0;
                break;
            }
            if (k + 1 == cn && end != dl) { /* trailing bytes: the exact decoder notes them */
                good_dg = 0;
                break;
            }
            uint32_t fmt = be32(s);
            int64_t rlen = be32(s + 44);
            int good = fmt == FLOW_SAMPLE && slen >= (int64_t)MIN_FLOW - 8
                && be32(s + 36) == 1 && be32(s + 40) == FLOW_RECORD_RAW_HEADER
                && rlen >= (int64_t)RAW_HEADER_FIXED && rlen + 40 <= slen
                && (int64_t)be32(s + 60) <= rlen - (int64_t)RAW_HEADER_FIXED;
            if (good) {
                if (m >= row_cap)
                    return -1;
                int64_t *r = rows + m;
                int64_t inp = be32(s + 28), outp = be32(s + 32);
                int64_t hl = be32(s + 60);
                r[(int64_t)C_DG * row_cap] = i;
                r[(int64_t)C_SK * row_cap] = k;
                r[(int64_t)C_SA * row_cap] = st + o;
                r[(int64_t)C_SEQ * row_cap] = be32(s + 8);
                r[(int64_t)C_SID * row_cap] = be32(s + 12);
                r[(int64_t)C_RATE * row_cap] = be32(s + 16);
                r[(int64_t)C_POOL * row_cap] = be32(s + 20);
                /* Format 0 (the top two bits) with a nonzero index: 0 < word < 2**30. */
                r[(int64_t)C_IN * row_cap] = inp > 0 && inp < (1 << 30) ? inp : NONE;
                r[(int64_t)C_OUT * row_cap] = outp > 0 && outp < (1 << 30) ? outp : NONE;
                r[(int64_t)C_HPROTO * row_cap] = be32(s + 48);
                r[(int64_t)C_FRAME * row_cap] = be32(s + 52);
                r[(int64_t)C_HL * row_cap] = hl;
                /* The header lies inside its record, which lies inside the sample. */
                parse_header(s + 64, hl, be32(s + 48), rows, row_cap, m);
                m++;
            } else if (counters && (fmt == COUNTER_SAMPLE || fmt == COUNTER_SAMPLE_EXPANDED)) {
                if (nc >= ctr_cap)
                    return -1;
                ctrs[(int64_t)K_DG * ctr_cap + nc] = i;
                ctrs[(int64_t)K_SA * ctr_cap + nc] = st + o;
                ctrs[(int64_t)K_FMT * ctr_cap + nc] = fmt;
                ctrs[(int64_t)K_SK * ctr_cap + nc] = k;
                nc++;
            } else {
                good_dg = 0;
                break;
            }
            o = end;
        }
        if (good_dg) {
            ok[i] = 1;
        } else {
            m = m0;
            nc = nc0;
        }
    }
    *n_ctr = nc;
    return m;
}

/* Copies span i (padded[i] bytes from starts[i] of src) to dst, one after another, then
 * zeroes dst's last `tail` bytes. Returns the bytes copied, or -1 (nothing written) when a
 * span lies outside src or the spans and tail do not fit dst. */
int64_t sw_gather(const uint8_t *src, uint64_t src_len, const int64_t *starts,
                  const int64_t *padded, int64_t n, uint8_t *dst, uint64_t dst_len,
                  uint64_t tail)
{
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = starts[i], p = padded[i];
        if (a < 0 || p < 0 || (uint64_t)a > src_len || (uint64_t)p > src_len - (uint64_t)a)
            return -1;
        total += (uint64_t)p;
    }
    if (tail > dst_len || total > dst_len - tail)
        return -1;
    uint64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        memcpy(dst + at, src + starts[i], (size_t)padded[i]);
        at += (uint64_t)padded[i];
    }
    memset(dst + at, 0, (size_t)tail);
    return (int64_t)at;
}

/* -- sequence tracking ---------------------------------------------------------------------------
 *
 * sequence.py ColumnSequenceTracker.observe_columns walked in row order: SequenceTracker.observe
 * per row on the tracker's arrays (slot -> code, last number, last uptime or -1), each row's code
 * found through an open-addressing table of (code, slot) pairs. The numpy twin sorts the batch
 * by key and does a dozen passes over it; this is one pass. The counters (dicts keyed by the
 * caller's keys) stay Python's: each row's event and, for a gap, the numbers it skipped, are
 * handed back and Python applies the rows that are neither FIRST nor IN_ORDER.
 */
#define SEQ_MASK 0xFFFFFFFFull
#define SEQ_HALF 0x80000000ull
#define SEQ_MOD 0x100000000ull
#define REORDER_WINDOW 64u    /* sequence.py REORDER_WINDOW */
#define UPTIME_SLACK_MS 1000u /* sequence.py UPTIME_SLACK_MS */

/* Row events, sequence.py _EV_* in the same order. */
enum { EV_FIRST, EV_IN_ORDER, EV_GAP, EV_DUPLICATE, EV_LATE, EV_RESET };

/* log2 of a table capacity: a power of two, at least 2 (else -1). */
static int tab_bits(int64_t cap)
{
    if (cap < 2 || (cap & (cap - 1)) != 0)
        return -1;
    int b = 0;
    while (((int64_t)1 << b) < cap)
        b++;
    return b;
}

/* Fibonacci hashing: the high bits of code * 2^64/phi, so neighbouring codes (an agent's
 * source ids) spread over the table. */
static uint64_t tab_home(int64_t code, int bits)
{
    return ((uint64_t)code * 0x9E3779B97F4A7C15ull) >> (64 - bits);
}

/* The table entry of `code`: its slot (>= 0), or -1 with *at the empty entry it would take.
 * Returns -2 when no entry is empty (cannot happen below half full). */
static int64_t tab_find(const int64_t *tab, int64_t cap, int bits, int64_t code, uint64_t *at)
{
    uint64_t mask = (uint64_t)cap - 1, h = tab_home(code, bits);
    for (int64_t p = 0; p < cap; p++) {
        const int64_t *e = tab + 2 * h;
        if (e[1] < 0) {
            *at = h;
            return -1;
        }
        if (e[0] == code)
            return e[1];
        h = (h + 1) & mask;
    }
    return -2;
}

/* Enters slots [from, to) (codes kcodes[from..to)) in the table: the slots the numpy path added.
 * tab holds 2 * tab_cap int64 (code, slot; slot -1 when empty). Returns 0, or -1 (the table
 * left as it was up to the failing slot) when the capacities do not hold them or a code is
 * already in. */
int64_t sw_seq_index(int64_t *tab, int64_t tab_cap, const int64_t *kcodes, int64_t slot_cap,
                     int64_t from, int64_t to)
{
    int bits = tab_bits(tab_cap);
    if (bits < 0 || from < 0 || from > to || to > slot_cap || to > tab_cap / 2)
        return -1;
    for (int64_t s = from; s < to; s++) {
        uint64_t at = 0;
        if (tab_find(tab, tab_cap, bits, kcodes[s], &at) != -1)
            return -1;
        tab[2 * at] = kcodes[s];
        tab[2 * at + 1] = s;
    }
    return 0;
}

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif
/* Rows ahead whose table entry is fetched early: a fleet's keys do not fit the L1 cache and a
 * batch's rows name them in no useful order, so each lookup would otherwise wait on memory
 * (10k random keys: ~23 ns a row without, ~17 with; also fetching the row's state early, after
 * a second lookup, measured no better). */
#define SEQ_AHEAD 8

/* Why sw_seq stopped before its last row (io[1]). */
enum { SEQ_DONE, SEQ_EVICT, SEQ_GROW };

/* observe(codes[i], seqs[i], ups[i]) for rows i = start, start + 1, ... < n (ups NULL: no
 * uptime; an uptime < 0 is unknown): ev[i] the event, gap[i] the numbers skipped (GAP, else 0).
 * State: slot s < io[0] holds code kcodes[s] and (last number, last uptime or -1) in
 * kstate[2s], kstate[2s + 1], for slot_cap slots; tab is its table (2 * tab_cap int64, tab_cap
 * a power of two; kept at most half full). A code not in the table takes the next slot (its
 * FIRST). The walk stops before a row, returns its index and says why in io[1]: SEQ_EVICT when
 * the row is a new key and io[0] >= max_keys, for the caller to evict every key and call again
 * from that row with `force` set (which lets row `start` in whatever max_keys is: observe()
 * adds the key after the eviction); SEQ_GROW when the slots or the table are full, for the
 * caller to grow them and call again. Returns n when every row is done (io[1] SEQ_DONE), -1
 * when the arguments are out of step (the table holding a slot past io[0]). */
int64_t sw_seq(const int64_t *codes, const int64_t *seqs, const int64_t *ups, int64_t n,
               int64_t start, int32_t force, int64_t *tab, int64_t tab_cap, int64_t *kcodes,
               int64_t *kstate, int64_t slot_cap, int64_t *io, int64_t max_keys, int8_t *ev,
               int64_t *gap)
{
    int bits = tab_bits(tab_cap);
    int64_t ns = io[0];
    io[1] = SEQ_DONE;
    if (bits < 0 || start < 0 || start > n || ns < 0 || ns > slot_cap || ns > tab_cap / 2)
        return -1;
    for (int64_t i = start; i < n; i++) {
        if (i + SEQ_AHEAD < n)
            PREFETCH(tab + 2 * tab_home(codes[i + SEQ_AHEAD], bits));
        int64_t code = codes[i], seq = seqs[i], up = ups ? ups[i] : -1;
        uint64_t at = 0;
        int64_t slot = tab_find(tab, tab_cap, bits, code, &at);
        if (slot == -1) {
            if (ns >= max_keys && !(force && i == start)) {
                io[0] = ns;
                io[1] = SEQ_EVICT;
                return i;
            }
            if (ns >= slot_cap || ns + 1 > tab_cap / 2) {
                io[0] = ns;
                io[1] = SEQ_GROW;
                return i;
            }
            tab[2 * at] = code;
            tab[2 * at + 1] = ns;
            kcodes[ns] = code;
            kstate[2 * ns] = seq;
            kstate[2 * ns + 1] = up;
            ns++;
            ev[i] = EV_FIRST;
            gap[i] = 0;
            continue;
        }
        if (slot < 0 || slot >= ns) {
            io[0] = ns;
            return -1;
        }
        int64_t *st = kstate + 2 * slot;
        int64_t last_up = st[1];
        gap[i] = 0;
        if (up >= 0 && last_up >= 0) {
            /* Uptime is a 32-bit millisecond counter too: "back" is taken modulo 2^32. */
            uint64_t back = ((uint64_t)last_up - (uint64_t)up) & SEQ_MASK;
            if (back > UPTIME_SLACK_MS && back < SEQ_HALF) {
                st[0] = seq;
                st[1] = up;
                ev[i] = EV_RESET;
                continue;
            }
        }
        /* Unsigned arithmetic wraps modulo 2^64, so the low 32 bits are the difference
         * modulo 2^32 whatever the int64 values. */
        uint64_t d = ((uint64_t)seq - (uint64_t)st[0]) & SEQ_MASK;
        if (d == 0) {
            ev[i] = EV_DUPLICATE;
        } else if (d < SEQ_HALF) {
            st[0] = seq;
            if (up >= 0)
                st[1] = up;
            if (d == 1) {
                ev[i] = EV_IN_ORDER;
            } else {
                ev[i] = EV_GAP;
                gap[i] = (int64_t)(d - 1);
            }
        } else if (SEQ_MOD - d <= REORDER_WINDOW) {
            ev[i] = EV_LATE;
        } else {
            /* A jump back beyond the window: a restart; the uptime is taken as it comes
             * (unknown too), as SequenceTracker._reset does. */
            st[0] = seq;
            st[1] = up;
            ev[i] = EV_RESET;
        }
    }
    io[0] = ns;
    return n;
}
