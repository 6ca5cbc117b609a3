/* The varbind loop of drivers/snmp/ber.py (_decode_pdu), in C: the part of an SNMP poll's CPU
 * that grows with the table (one call per reply, a few hundred varbinds each).
 *
 * varbinds(data, pos, vend, absent) -> (varbinds, tags) | None
 *   data    bytes holding the VarBindList's contents at data[pos:vend]
 *   absent  (Absent.NO_SUCH_OBJECT, Absent.NO_SUCH_INSTANCE, Absent.END_OF_MIB_VIEW)
 *
 * It reads exactly what the Python loop reads and builds the same objects: (oid tuple, value)
 * pairs, values as ints, bytes, OID tuples or the Absent members (NULL as NO_SUCH_OBJECT), and
 * each value's tag. It never raises for what it reads: wherever the Python loop would raise a
 * BerError (a bad length, tag, OID, integer, an IpAddress not 4 octets, too many varbinds),
 * it returns None and the caller runs the Python loop, which names the fault. So C answers
 * for the well-formed replies and Python, unchanged, for every fault; tests/unit/
 * test_snmp_ber_c.py holds the two equal on generated, corrupted and truncated PDUs.
 *
 * Bounds as in ber.py: at most 4096 varbinds, OIDs of at most 128 arcs, sub-identifiers up to
 * 2**32-1 (the first up to 2**32-1+80), integers of 1..9 octets inside their type's range,
 * definite lengths of at most 4 length octets, every length inside its enclosing one.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_VARBINDS 4096
#define MAX_OID_ARCS 128
#define MAX_INT_OCTETS 9
#define MAX_LENGTH_OCTETS 4
#define SUBID_MAX 0xFFFFFFFFULL

enum {
    T_INTEGER = 0x02, T_OCTET_STRING = 0x04, T_NULL = 0x05, T_OID = 0x06, T_SEQUENCE = 0x30,
    T_IP_ADDRESS = 0x40, T_COUNTER32 = 0x41, T_GAUGE32 = 0x42, T_TIMETICKS = 0x43,
    T_OPAQUE = 0x44, T_COUNTER64 = 0x46, T_NO_SUCH_OBJECT = 0x80, T_NO_SUCH_INSTANCE = 0x81,
    T_END_OF_MIB_VIEW = 0x82,
};

/* ber._tlv: tag at d[*pos], its definite length; content at [*start, *stop). 0, or -1 for
 * anything _tlv raises on (multi-byte tag, indefinite or over-long length, past `end`). */
static int tlv(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, int *tag,
               Py_ssize_t *start, Py_ssize_t *stop)
{
    if (pos >= end)
        return -1;
    unsigned char t = d[pos];
    if ((t & 0x1F) == 0x1F)
        return -1;
    pos++;
    if (pos >= end)
        return -1;
    Py_ssize_t n = d[pos++];
    if (n & 0x80) {
        int k = (int)(n & 0x7F);
        if (k == 0 || k > MAX_LENGTH_OCTETS || pos + k > end)
            return -1;
        uint64_t v = 0;
        for (int i = 0; i < k; i++)
            v = (v << 8) | d[pos + i];
        pos += k;
        if (v > (uint64_t)(end - pos))
            return -1;
        n = (Py_ssize_t)v;
    } else if (n > end - pos) {
        return -1;
    }
    *tag = t;
    *start = pos;
    *stop = pos + n;
    return 0;
}

/* ber._oid: the content octets d[s:e] as a tuple, or NULL with no exception set when
 * _oid would raise (NULL with an exception set: out of memory). */
static PyObject *oid_tuple(const unsigned char *d, Py_ssize_t s, Py_ssize_t e)
{
    uint64_t arcs[MAX_OID_ARCS];
    Py_ssize_t n = 0;
    if (s >= e || (d[e - 1] & 0x80))
        return NULL;
    uint64_t sub = 0, limit = SUBID_MAX + 80;
    int fresh = 1;
    for (Py_ssize_t i = s; i < e; i++) {
        unsigned char b = d[i];
        if (fresh && b == 0x80)
            return NULL;
        sub = (sub << 7) | (b & 0x7F);
        if (sub > limit)
            return NULL;
        if (b & 0x80) {
            fresh = 0;
            continue;
        }
        if (n >= MAX_OID_ARCS - 1)
            return NULL;
        arcs[n++] = sub;
        limit = SUBID_MAX;
        sub = 0;
        fresh = 1;
    }
    PyObject *t = PyTuple_New(n + 1);
    if (t == NULL)
        return NULL;
    uint64_t first = arcs[0];
    uint64_t head[2];
    if (first < 80) {
        head[0] = first / 40;
        head[1] = first % 40;
    } else {
        head[0] = 2;
        head[1] = first - 80;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        uint64_t v = i < 2 ? head[i] : arcs[i - 1];
        PyObject *o = PyLong_FromUnsignedLongLong(v);
        if (o == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

/* ber._int plus the range check: NULL without an exception where _int raises. */
static PyObject *int_value(const unsigned char *d, Py_ssize_t s, Py_ssize_t e, int tag)
{
    Py_ssize_t size = e - s;
    if (size == 0 || size > MAX_INT_OCTETS)
        return NULL;
    __int128 v;
    if (size == 9) {
        /* Only a leading 0x00 (or 0xFF before a set bit: a negative in 64 bits) can land in a
         * range; any other 9-octet integer is beyond every SNMP type. */
        uint64_t rest = 0;
        for (Py_ssize_t i = 1; i < 9; i++)
            rest = (rest << 8) | d[s + i];
        if (d[s] == 0x00)
            v = (__int128)rest;
        else if (d[s] == 0xFF && (rest >> 63))
            v = (__int128)(int64_t)rest;
        else
            return NULL;
    } else {
        uint64_t u = 0;
        for (Py_ssize_t i = 0; i < size; i++)
            u = (u << 8) | d[s + i];
        if (size < 8 && (d[s] & 0x80))
            u |= ~(uint64_t)0 << (8 * size); /* sign-extend */
        v = (__int128)(int64_t)u;
    }
    __int128 low, high;
    switch (tag) {
    case T_INTEGER:
        low = -((__int128)1 << 31);
        high = ((__int128)1 << 31) - 1;
        break;
    case T_COUNTER64:
        low = 0;
        high = ((__int128)1 << 64) - 1;
        break;
    default: /* Counter32, Gauge32, TimeTicks */
        low = 0;
        high = ((__int128)1 << 32) - 1;
        break;
    }
    if (v < low || v > high)
        return NULL;
    if (v > (__int128)INT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
    return PyLong_FromLongLong((long long)v);
}

static PyObject *varbinds(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, vend;
    PyObject *absent;
    if (!PyArg_ParseTuple(args, "y*nnO!:varbinds", &buf, &pos, &vend, &PyTuple_Type, &absent))
        return NULL;
    PyObject *vbs = NULL, *tags = NULL, *result = NULL;
    if (PyTuple_GET_SIZE(absent) != 3) {
        PyErr_SetString(PyExc_ValueError, "absent must hold the three Absent members");
        goto done;
    }
    if (pos < 0 || vend < pos || vend > buf.len) {
        PyErr_SetString(PyExc_ValueError, "varbind bounds outside the data");
        goto done;
    }
    const unsigned char *d = (const unsigned char *)buf.buf;
    vbs = PyList_New(0);
    tags = PyList_New(0);
    if (vbs == NULL || tags == NULL)
        goto done;
    while (pos < vend) {
        int tag;
        Py_ssize_t s, e, os_, oe, vs, ve;
        if (PyList_GET_SIZE(vbs) >= MAX_VARBINDS)
            goto fallback;
        if (tlv(d, pos, vend, &tag, &s, &e) < 0 || tag != T_SEQUENCE)
            goto fallback;
        if (tlv(d, s, e, &tag, &os_, &oe) < 0 || tag != T_OID)
            goto fallback;
        if (tlv(d, oe, e, &tag, &vs, &ve) < 0 || ve != e)
            goto fallback;
        PyObject *value = NULL;
        switch (tag) {
        case T_INTEGER:
        case T_COUNTER32:
        case T_GAUGE32:
        case T_TIMETICKS:
        case T_COUNTER64:
            value = int_value(d, vs, ve, tag);
            break;
        case T_IP_ADDRESS:
            if (ve - vs != 4)
                goto fallback;
            /* fall through */
        case T_OCTET_STRING:
        case T_OPAQUE:
            value = PyBytes_FromStringAndSize((const char *)d + vs, ve - vs);
            break;
        case T_NULL:
        case T_NO_SUCH_OBJECT:
        case T_NO_SUCH_INSTANCE:
        case T_END_OF_MIB_VIEW:
            if (ve != vs)
                goto fallback;
            value = PyTuple_GET_ITEM(absent, tag == T_NULL ? 0 : tag - T_NO_SUCH_OBJECT);
            Py_INCREF(value);
            break;
        case T_OID:
            value = oid_tuple(d, vs, ve);
            break;
        default:
            goto fallback;
        }
        if (value == NULL) {
            if (PyErr_Occurred())
                goto done;
            goto fallback;
        }
        PyObject *oid = oid_tuple(d, os_, oe);
        if (oid == NULL) {
            Py_DECREF(value);
            if (PyErr_Occurred())
                goto done;
            goto fallback;
        }
        PyObject *pair = PyTuple_Pack(2, oid, value);
        Py_DECREF(oid);
        Py_DECREF(value);
        if (pair == NULL)
            goto done;
        int failed = PyList_Append(vbs, pair);
        Py_DECREF(pair);
        if (failed)
            goto done;
        PyObject *t = PyLong_FromLong(tag);
        if (t == NULL)
            goto done;
        failed = PyList_Append(tags, t);
        Py_DECREF(t);
        if (failed)
            goto done;
        pos = e;
    }
    result = PyTuple_Pack(2, vbs, tags);
    goto done;
fallback:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(vbs);
    Py_XDECREF(tags);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"varbinds", varbinds, METH_VARARGS,
     "varbinds(data, pos, vend, absent) -> (varbinds, tags), or None where ber.py would raise"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_bervb_c",
    .m_doc = "ber.py's varbind loop in C (see _bervb.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__bervb_c(void)
{
    return PyModule_Create(&module);
}
