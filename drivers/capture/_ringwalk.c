/* The TPACKET_V3 ring walk of the SPAN batch path (drivers/capture/ringwalk.py).
 *
 * Following tp_next_offset frame by frame is the one per-frame step Python cannot do in bulk
 * (each offset depends on the previous frame), and it costs ~1 us per frame in Python against
 * a few ns here. Everything else stays in numpy. Loaded with ctypes, so no Python headers.
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
int64_t rw_walk(const uint8_t *ring, uint64_t ring_len, uint64_t block_size,
                const int64_t *bases, int64_t nblocks, int64_t out_cap,
                int64_t *data_off, int64_t *snaplen, int64_t *wire, int64_t *sec,
                int64_t *nsec, int64_t *status, int64_t *vlan_tci, int64_t *vlan_tpid,
                int64_t *block_idx, int64_t *bad, int64_t *n_bad)
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

/* Copies frame i's first lens[i] bytes (from offs[i] in the ring) into row i of dst
 * (n rows of `slot` bytes), zero-filling the rest of the row. Rows whose range is not inside
 * the ring or longer than a slot are left zero and counted in the return value. */
int64_t rw_copy(const uint8_t *ring, uint64_t ring_len, const int64_t *offs,
                const int64_t *lens, int64_t n, uint8_t *dst, int64_t slot)
{
    int64_t skipped = 0;
    for (int64_t i = 0; i < n; i++) {
        uint8_t *row = dst + i * slot;
        int64_t o = offs[i], l = lens[i];
        if (o < 0 || l < 0 || l > slot || (uint64_t)o > ring_len
            || (uint64_t)l > ring_len - (uint64_t)o) {
            memset(row, 0, (size_t)slot);
            skipped++;
            continue;
        }
        memcpy(row, ring + o, (size_t)l);
        if (l < slot)
            memset(row + l, 0, (size_t)(slot - l));
    }
    return skipped;
}
