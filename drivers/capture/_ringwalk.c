/* The TPACKET_V3 ring walk of the SPAN batch path (drivers/capture/ringwalk.py).
 *
 * Following tp_next_offset frame by frame is the one per-frame step Python cannot do in bulk
 * (each offset depends on the previous frame), and it costs ~1 us per frame in Python against
 * a few ns here. rw_batch also copies each frame out and reads its header fields in the same
 * pass (the numpy read of drivers/capture/columns.py is its twin): a batch of 16k frames is
 * megabytes, and three passes over it cost 1.2x one. Loaded with ctypes, no Python headers.
 *
 * Every read is checked against the block and the ring: a block whose header or chain points
 * outside its block stops there (frames read so far are kept) and is listed in bad[]; nothing
 * outside [ring, ring + ring_len) is ever read or written.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BLOCK_STATUS_OFF 8u /* tpacket_block_desc: version, offset_to_priv, then hdr_v1 */
#define PKT_HDR_LEN 48u     /* sizeof(struct tpacket3_hdr) */

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Walks blocks bases[0..nblocks) of size block_size. Per frame writes: offset of its first
 * byte in the ring, tp_snaplen, tp_len, tp_sec, tp_nsec, tp_status, tp_vlan_tci, tp_vlan_tpid
 * and the index of its block. Returns the number of frames, or -1 when out_cap is too small
 * (nothing is written past out_cap). Broken blocks go to bad[] (room for nblocks), counted in
 * *n_bad. */
struct copy_read; /* rw_batch's copy and column read, NULL for a bare walk */
static void copy_and_read(const uint8_t *src, int64_t snap, const struct copy_read *cr,
                          int64_t i);

static int64_t walk_impl(const uint8_t *ring, uint64_t ring_len, uint64_t block_size,
                         const int64_t *bases, int64_t nblocks, int64_t out_cap,
                         int64_t *data_off, int64_t *snaplen, int64_t *wire, int64_t *sec,
                         int64_t *nsec, int64_t *status, int64_t *vlan_tci, int64_t *vlan_tpid,
                         int64_t *block_idx, int64_t *bad, int64_t *n_bad,
                         const struct copy_read *cr)
{
    int64_t n = 0;
    *n_bad = 0;
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t base = bases[b];
        if (base < 0 || block_size < BLOCK_STATUS_OFF + 12u || (uint64_t)base > ring_len
            || block_size > ring_len - (uint64_t)base) {
            bad[(*n_bad)++] = b;
            continue;
        }
        uint64_t end = (uint64_t)base + block_size;
        uint32_t num = rd32(ring + base + BLOCK_STATUS_OFF + 4);
        uint64_t off = (uint64_t)base + rd32(ring + base + BLOCK_STATUS_OFF + 8);
        int broken = 0;
        for (uint32_t i = 0; i < num; i++) {
            if (off < (uint64_t)base + BLOCK_STATUS_OFF + 12u || off > end
                || end - off < PKT_HDR_LEN) {
                broken = 1;
                break;
            }
            const uint8_t *h = ring + off;
            uint32_t snap = rd32(h + 12);
            uint16_t mac = rd16(h + 24);
            if ((uint64_t)mac + snap > end - off) {
                broken = 1;
                break;
            }
            if (n >= out_cap)
                return -1;
            data_off[n] = (int64_t)(off + mac);
            snaplen[n] = snap;
            wire[n] = rd32(h + 16);
            sec[n] = rd32(h + 4);
            nsec[n] = rd32(h + 8);
            status[n] = rd32(h + 20);
            vlan_tci[n] = rd32(h + 32);
            vlan_tpid[n] = rd32(h + 36);
            block_idx[n] = b;
            if (cr)
                copy_and_read(h + mac, snap, cr, n);
            n++;
            if (i + 1 < num) {
                uint32_t next = rd32(h);
                if (next < PKT_HDR_LEN) { /* 0 or overlapping: the chain is broken */
                    broken = 1;
                    break;
                }
                off += next;
            }
        }
        if (broken)
            bad[(*n_bad)++] = b;
    }
    return n;
}

int64_t rw_walk(const uint8_t *ring, uint64_t ring_len, uint64_t block_size,
                const int64_t *bases, int64_t nblocks, int64_t out_cap,
                int64_t *data_off, int64_t *snaplen, int64_t *wire, int64_t *sec,
                int64_t *nsec, int64_t *status, int64_t *vlan_tci, int64_t *vlan_tpid,
                int64_t *block_idx, int64_t *bad, int64_t *n_bad)
{
    return walk_impl(ring, ring_len, block_size, bases, nblocks, out_cap, data_off, snaplen,
                     wire, sec, nsec, status, vlan_tci, vlan_tpid, block_idx, bad, n_bad, NULL);
}

/* Copies frame i's first lens[i] bytes (from offs[i] in the ring) into row i of dst
 * (n rows of `slot` bytes), zero-filling the rest of the row. Rows whose range is not inside
 * the ring or longer than a slot are left zero and counted in the return value. */
/* One row of `slot` bytes: src's first l bytes, zero-padded (src NULL: all zero). */
static void copy_row(uint8_t *row, const uint8_t *src, int64_t l, int64_t slot)
{
    if (src == NULL) {
        memset(row, 0, (size_t)slot);
        return;
    }
    memcpy(row, src, (size_t)l);
    if (l < slot)
        memset(row + l, 0, (size_t)(slot - l));
}

int64_t rw_copy(const uint8_t *ring, uint64_t ring_len, const int64_t *offs,
                const int64_t *lens, int64_t n, uint8_t *dst, int64_t slot)
{
    int64_t skipped = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t o = offs[i], l = lens[i];
        int outside = o < 0 || l < 0 || l > slot || (uint64_t)o > ring_len
                      || (uint64_t)l > ring_len - (uint64_t)o;
        copy_row(dst + i * slot, outside ? NULL : ring + o, l, slot);
        skipped += outside;
    }
    return skipped;
}

static uint64_t be(const uint8_t *p, int k) {
    uint64_t v = 0;
    for (int j = 0; j < k; j++)
        v = v << 8 | p[j];
    return v;
}

/* columns.frames_to_columns' bulk read, row by row: the same fields from the same bytes under
 * the same conditions (the numpy twin is the reference; tests hold the two equal on any bytes).
 * Tables, one byte per entry: tpid[65536] (VLAN tag EtherTypes), v6ext[256] (IPv6 extension
 * headers the exact parser walks), portp[256] (protocols with ports), icmpp[256] (ICMP,
 * ICMPv6). ok[i] = 1 where the row was read here; rows with ok 0 are the exact parser's to
 * fill (their other outputs are whatever this read gave). smac/dmac are the 48-bit MACs. */
struct read_out {
    const uint8_t *tpid, *v6ext, *portp, *icmpp;
    int64_t none;
    uint64_t v4mapped;
    uint8_t *ok;
    int64_t *ip_version, *protocol, *src_port, *dst_port, *tcp_flags, *icmp_type;
    uint64_t *src_hi, *src_lo, *dst_hi, *dst_lo;
    int64_t *smac, *dmac;
};

/* Row i: f holds `slot` bytes (slot >= 60), the first `len` of them captured. */
static void read_row(const uint8_t *f, int64_t len, int64_t slot, const struct read_out *o,
                     int64_t i)
{
    const uint8_t *tpid = o->tpid;
    int64_t none = o->none;
    int tagged = tpid[f[12] << 8 | f[13]];
    const uint8_t *x = f + (tagged ? 4 : 0); /* the header with the tag cut out, from 12 */
    int64_t l2 = tagged ? 18 : 14;
    unsigned et = (unsigned)x[12] << 8 | x[13];
    int ok = len >= 14 && (!tagged || (len >= 18 && !tpid[et]));
    int is4 = et == 0x0800, is6 = et == 0x86DD, ip = is4 || is6;
    unsigned vb = x[14];
    if (ip)
        ok = ok && len > l2 && (int)(vb >> 4) == (is4 ? 4 : 6);
    int64_t ihl = (int64_t)(vb & 0x0F) * 4;
    if (is4)
        ok = ok && len >= l2 + 20 && ihl >= 20;
    unsigned frag = ((unsigned)x[20] << 8 | x[21]) & 0x1FFF;
    unsigned proto8 = is4 ? x[23] : x[20];
    if (is6)
        ok = ok && len >= l2 + 40 && !o->v6ext[proto8];
    int64_t p = is4 ? l2 + ihl : l2 + 40;
    int l4 = ip && !(is4 && frag != 0);
    int ports = l4 && o->portp[proto8];
    int tcp = ports && proto8 == 6;
    int icmp = l4 && o->icmpp[proto8];
    int64_t need = tcp ? 14 : ports ? 4 : icmp ? 2 : 0;
    ok = ok && len >= p + need;
    int64_t top = slot - 1;
#define G(k) ((int64_t)f[p + (k) < top ? p + (k) : top])
    int64_t b0 = G(0), b2 = G(2);
    o->ip_version[i] = ip ? (is4 ? 4 : 6) : none;
    o->protocol[i] = ip ? (int64_t)proto8 : none;
    o->src_port[i] = ports ? (b0 << 8 | G(1)) : none;
    o->dst_port[i] = ports ? (b2 << 8 | G(3)) : none;
    o->tcp_flags[i] = tcp ? G(13) : none;
    o->icmp_type[i] = icmp ? b0 : none;
#undef G
    int m4 = is4 && ok, m6 = is6 && ok;
    o->src_hi[i] = m6 ? be(x + 22, 8) : 0;
    o->src_lo[i] = m6 ? be(x + 30, 8) : m4 ? (be(x + 26, 4) | o->v4mapped) : 0;
    o->dst_hi[i] = m6 ? be(x + 38, 8) : 0;
    o->dst_lo[i] = m6 ? be(x + 46, 8) : m4 ? (be(x + 30, 4) | o->v4mapped) : 0;
    o->smac[i] = (int64_t)be(f + 6, 6);
    o->dmac[i] = (int64_t)be(f, 6);
    o->ok[i] = (uint8_t)ok;
}

#define READ_OUT_ARGS                                                                         \
    const uint8_t *tpid, const uint8_t *v6ext, const uint8_t *portp, const uint8_t *icmpp,    \
        int64_t none, uint64_t v4mapped, uint8_t *ok, int64_t *ip_version, int64_t *protocol, \
        int64_t *src_port, int64_t *dst_port, int64_t *tcp_flags, int64_t *icmp_type,         \
        uint64_t *src_hi, uint64_t *src_lo, uint64_t *dst_hi, uint64_t *dst_lo, int64_t *smac, \
        int64_t *dmac
#define READ_OUT_INIT                                                                          \
    {tpid, v6ext, portp, icmpp, none, v4mapped, ok, ip_version, protocol, src_port, dst_port, \
     tcp_flags, icmp_type, src_hi, src_lo, dst_hi, dst_lo, smac, dmac}

/* frames: n rows of `slot` bytes (slot >= 60), caplen[i] the bytes captured of row i. */
void rw_columns(const uint8_t *frames, int64_t n, int64_t slot, const int64_t *caplen,
                READ_OUT_ARGS)
{
    struct read_out o = READ_OUT_INIT;
    for (int64_t i = 0; i < n; i++)
        read_row(frames + i * slot, caplen[i], slot, &o, i);
}

struct copy_read {
    int64_t snap_limit, slot;
    uint8_t *dst;
    int64_t *caplen;
    struct read_out o;
};

/* rw_copy's row then read_row on it, while the frame is in the cache. */
static void copy_and_read(const uint8_t *src, int64_t snap, const struct copy_read *cr,
                          int64_t i)
{
    int64_t slot = cr->slot;
    int64_t l = snap < cr->snap_limit ? snap : cr->snap_limit;
    uint8_t *row = cr->dst + i * slot;
    cr->caplen[i] = l;
    copy_row(row, l < 0 || l > slot ? NULL : src, l, slot);
    read_row(row, l, slot, &cr->o, i);
}

/* rw_walk, rw_copy and rw_columns in one pass over the ring: each frame's header, bytes and
 * fields are read while they are in the cache, not in three passes over a batch of megabytes.
 * The same outputs as the three calls: the walk's, then row i of dst (`slot` bytes) holds the
 * frame's first caplen[i] = min(tp_snaplen, snap_limit) bytes zero-padded, then the columns of
 * that row. dst has room for out_cap rows (slot >= 60). */
int64_t rw_batch(const uint8_t *ring, uint64_t ring_len, uint64_t block_size,
                 const int64_t *bases, int64_t nblocks, int64_t out_cap,
                 int64_t *data_off, int64_t *snaplen, int64_t *wire, int64_t *sec,
                 int64_t *nsec, int64_t *status, int64_t *vlan_tci, int64_t *vlan_tpid,
                 int64_t *block_idx, int64_t *bad, int64_t *n_bad, int64_t snap_limit,
                 uint8_t *dst, int64_t slot, int64_t *caplen, READ_OUT_ARGS)
{
    struct copy_read cr = {snap_limit, slot, dst, caplen, READ_OUT_INIT};
    return walk_impl(ring, ring_len, block_size, bases, nblocks, out_cap, data_off, snaplen,
                     wire, sec, nsec, status, vlan_tci, vlan_tpid, block_idx, bad, n_bad, &cr);
}
