/* The config loader's YAML composer, in C over libyaml's event parser: the node tree that
 * agent/config.py reads, for a 10,000-server file in a fraction of PyYAML's time.
 *
 * compose(text, resolve, ScalarNode, SequenceNode, MappingNode, max_depth) -> (root,) | None
 *   text       the whole file (str)
 *   resolve    PyYAML's resolver: resolve(kind, value, implicit) -> tag
 *   *Node      yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode
 *   max_depth  the deepest nesting of collections it composes (agent/yamldepth.py MAX_DEPTH)
 *
 * The tree is the one PyYAML's pure-Python composer builds (agent/config.py's reference):
 * the same node classes, tags (asked of `resolve`, remembered per plain scalar text, and once
 * per kind for the rest: without path resolvers PyYAML's answer depends on nothing else),
 * values, styles (None for a plain scalar, as the pure-Python composer spells it), anchors
 * and aliases (the same node object again), and start marks with the line, column and index
 * libyaml reports. Not the same, and never read by agent/config.py: end marks (libyaml's),
 * and the flow style of a sequence written at its key's indentation (libyaml's False, where
 * PyYAML's parser leaves None). Marks are this module's Mark: name, index, line, column, buffer
 * and pointer (None), get_snippet() and str() as yaml's own Mark without a buffer.
 *
 * It never raises for what it reads. It returns None, and the caller composes the text with
 * PyYAML's pure-Python composer, which gives the answer or the error with its line, for:
 * anything libyaml refuses, text that is not encodable as UTF-8 (a lone surrogate), more than
 * one document, an explicit tag, an undefined alias or a repeated anchor, an empty plain
 * scalar (`key:` with no value: libyaml marks it at the next token, PyYAML where it stands,
 * and an error about it names that line), and collections nested deeper than max_depth (the
 * stack here is explicit, not recursion, but PyYAML's is: past its depth the caller's error
 * names the line, as it does without this module).
 * tests/unit/test_config_loader_equivalence.py holds it to the pure-Python composer.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <yaml.h>

/* ---- Mark ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *name;
    Py_ssize_t index, line, column;
    PyObject *buffer, *pointer; /* always None: there is no buffer to cut a snippet from */
} Mark;

static void Mark_dealloc(Mark *m)
{
    Py_XDECREF(m->name);
    Py_XDECREF(m->buffer);
    Py_XDECREF(m->pointer);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *Mark_get_snippet(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_NONE;
}

static PyObject *Mark_str(Mark *m)
{
    return PyUnicode_FromFormat("  in \"%U\", line %zd, column %zd", m->name, m->line + 1, m->column + 1);
}

static PyMemberDef Mark_members[] = {
    {"name", T_OBJECT, offsetof(Mark, name), READONLY, NULL},
    {"index", T_PYSSIZET, offsetof(Mark, index), READONLY, NULL},
    {"line", T_PYSSIZET, offsetof(Mark, line), READONLY, NULL},
    {"column", T_PYSSIZET, offsetof(Mark, column), READONLY, NULL},
    {"buffer", T_OBJECT, offsetof(Mark, buffer), READONLY, NULL},
    {"pointer", T_OBJECT, offsetof(Mark, pointer), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Mark_methods[] = {
    {"get_snippet", Mark_get_snippet, METH_NOARGS, "None: the mark keeps no buffer"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MarkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rackwarden.agent._yamlcompose_c.Mark",
    .tp_basicsize = sizeof(Mark),
    .tp_dealloc = (destructor)Mark_dealloc,
    .tp_str = (reprfunc)Mark_str,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A position in the composed text, as yaml's Mark without a buffer.",
    .tp_members = Mark_members,
    .tp_methods = Mark_methods,
};

static PyObject *STREAM_NAME; /* "<unicode string>", PyYAML's name for a str */

static PyObject *new_mark(yaml_mark_t at)
{
    Mark *m = PyObject_New(Mark, &MarkType);
    if (m == NULL)
        return NULL;
    Py_INCREF(STREAM_NAME);
    m->name = STREAM_NAME;
    m->index = (Py_ssize_t)at.index;
    m->line = (Py_ssize_t)at.line;
    m->column = (Py_ssize_t)at.column;
    Py_INCREF(Py_None);
    m->buffer = Py_None;
    Py_INCREF(Py_None);
    m->pointer = Py_None;
    return (PyObject *)m;
}

/* ---- nodes ------------------------------------------------------------------------------ */

static PyObject *S_TAG, *S_VALUE, *S_START_MARK, *S_END_MARK, *S_STYLE, *S_FLOW_STYLE;
static PyObject *STYLE_SINGLE, *STYLE_DOUBLE, *STYLE_LITERAL, *STYLE_FOLDED;
static PyObject *EMPTY_TUPLE;

/* cls.__new__(cls) and the attributes Node.__init__ would set: (tag, value, start_mark,
 * end_mark, style_name=style). The class's own __init__ is a Python frame per node. */
static PyObject *new_node(PyObject *cls, PyObject *tag, PyObject *value, PyObject *start,
                          PyObject *end, PyObject *style_name, PyObject *style)
{
    PyObject *node = PyBaseObject_Type.tp_new((PyTypeObject *)cls, EMPTY_TUPLE, NULL);
    if (node == NULL)
        return NULL;
    if (PyObject_SetAttr(node, S_TAG, tag) < 0 || PyObject_SetAttr(node, S_VALUE, value) < 0
        || PyObject_SetAttr(node, S_START_MARK, start) < 0 || PyObject_SetAttr(node, S_END_MARK, end) < 0
        || PyObject_SetAttr(node, style_name, style) < 0) {
        Py_DECREF(node);
        return NULL;
    }
    return node;
}

/* ---- the composer ----------------------------------------------------------------------- */

typedef struct {
    PyObject *node;  /* a SequenceNode or MappingNode being filled (a borrowed reference: the
                        parent's list, or `root`, owns it) */
    PyObject *items; /* its value list (borrowed, owned by the node) */
    PyObject *key;   /* a mapping's key waiting for its value (owned), else NULL */
    int is_map;
} Frame;

typedef struct {
    PyObject *resolve, *scalar_cls, *seq_cls, *map_cls;
    PyObject *plain_tags;     /* plain scalar text -> tag */
    PyObject *quoted_tag;     /* any other scalar's: without path resolvers PyYAML's answer
                                 depends on neither its text nor its quoted flag */
    PyObject *seq_tag[2], *map_tag[2]; /* by the implicit flag */
    PyObject *anchors;        /* anchor -> node */
    Frame *stack;
    Py_ssize_t depth, cap, max_depth;
    PyObject *root;           /* owned */
    int refused;              /* 1: give the text to the pure-Python composer */
} State;

static int push(State *s, PyObject *node, PyObject *items, int is_map)
{
    if (s->depth >= s->max_depth) {
        s->refused = 1;
        return 0;
    }
    if (s->depth == s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 64;
        Frame *grown = PyMem_Realloc(s->stack, (size_t)cap * sizeof(Frame));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->stack = grown;
        s->cap = cap;
    }
    s->stack[s->depth].node = node;
    s->stack[s->depth].items = items;
    s->stack[s->depth].key = NULL;
    s->stack[s->depth].is_map = is_map;
    s->depth++;
    return 0;
}

/* Place a finished `node` (a new reference, always consumed) in its parent, or as the root. */
static int place(State *s, PyObject *node)
{
    if (s->depth == 0) {
        if (s->root != NULL) { /* a second root: only with a second document */
            Py_DECREF(node);
            s->refused = 1;
            return 0;
        }
        s->root = node;
        return 0;
    }
    Frame *f = &s->stack[s->depth - 1];
    if (!f->is_map) {
        int rc = PyList_Append(f->items, node);
        Py_DECREF(node);
        return rc;
    }
    if (f->key == NULL) {
        f->key = node;
        return 0;
    }
    PyObject *pair = PyTuple_Pack(2, f->key, node);
    Py_CLEAR(f->key);
    Py_DECREF(node);
    if (pair == NULL)
        return -1;
    int rc = PyList_Append(f->items, pair);
    Py_DECREF(pair);
    return rc;
}

/* An explicit tag (the config has no use for one): the pure-Python composer's business. */
static int tagged(const yaml_char_t *tag)
{
    return tag != NULL && !(tag[0] == '!' && tag[1] == '\0');
}

/* tag = resolve(kind, value, implicit), the answer kept in *slot (for all but plain scalars). */
static PyObject *kind_tag(State *s, PyObject **slot, PyObject *kind, PyObject *value, PyObject *implicit)
{
    if (*slot == NULL) {
        *slot = PyObject_CallFunctionObjArgs(s->resolve, kind, value, implicit, NULL);
        if (*slot == NULL)
            return NULL;
    }
    return *slot;
}

static int remember_anchor(State *s, const yaml_char_t *anchor, PyObject *node)
{
    if (anchor == NULL)
        return 0;
    PyObject *name = PyUnicode_FromString((const char *)anchor);
    if (name == NULL)
        return -1;
    int has = PyDict_Contains(s->anchors, name);
    int rc = has < 0 ? -1 : has ? (s->refused = 1, 0) : PyDict_SetItem(s->anchors, name, node);
    Py_DECREF(name);
    return rc;
}

static int on_scalar(State *s, yaml_event_t *e)
{
    if (tagged(e->data.scalar.tag)) {
        s->refused = 1;
        return 0;
    }
    PyObject *style;
    int plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    switch (e->data.scalar.style) {
    case YAML_PLAIN_SCALAR_STYLE: style = Py_None; break;
    case YAML_SINGLE_QUOTED_SCALAR_STYLE: style = STYLE_SINGLE; break;
    case YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = STYLE_DOUBLE; break;
    case YAML_LITERAL_SCALAR_STYLE: style = STYLE_LITERAL; break;
    case YAML_FOLDED_SCALAR_STYLE: style = STYLE_FOLDED; break;
    default: s->refused = 1; return 0;
    }
    if (plain && e->data.scalar.length == 0) { /* `key:` with no value: see the top */
        s->refused = 1;
        return 0;
    }
    PyObject *value = PyUnicode_DecodeUTF8((const char *)e->data.scalar.value,
                                           (Py_ssize_t)e->data.scalar.length, "strict");
    if (value == NULL)
        return -1;
    int pi = e->data.scalar.plain_implicit != 0, qi = e->data.scalar.quoted_implicit != 0;
    PyObject *tag;
    if (pi) { /* PyYAML: a plain scalar's tag is its implicit resolvers' answer for the text */
        tag = PyDict_GetItemWithError(s->plain_tags, value);
        if (tag == NULL) {
            if (PyErr_Occurred())
                goto fail;
            PyObject *implicit = PyTuple_Pack(2, Py_True, qi ? Py_True : Py_False);
            if (implicit == NULL)
                goto fail;
            tag = PyObject_CallFunctionObjArgs(s->resolve, s->scalar_cls, value, implicit, NULL);
            Py_DECREF(implicit);
            if (tag == NULL)
                goto fail;
            int rc = PyDict_SetItem(s->plain_tags, value, tag);
            Py_DECREF(tag); /* the dict holds it */
            if (rc < 0)
                goto fail;
        }
    } else if ((tag = s->quoted_tag) == NULL) { /* asked once per load */
        PyObject *implicit = PyTuple_Pack(2, Py_False, qi ? Py_True : Py_False);
        if (implicit == NULL)
            goto fail;
        tag = kind_tag(s, &s->quoted_tag, s->scalar_cls, value, implicit);
        Py_DECREF(implicit);
        if (tag == NULL)
            goto fail;
    }
    PyObject *start = new_mark(e->start_mark), *end = start ? new_mark(e->end_mark) : NULL;
    PyObject *node = end ? new_node(s->scalar_cls, tag, value, start, end, S_STYLE, style) : NULL;
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_DECREF(value);
    if (node == NULL)
        return -1;
    if (remember_anchor(s, e->data.scalar.anchor, node) < 0) {
        Py_DECREF(node);
        return -1;
    }
    return place(s, node);
fail:
    Py_DECREF(value);
    return -1;
}

static int on_start(State *s, yaml_event_t *e, int is_map)
{
    const yaml_char_t *tag = is_map ? e->data.mapping_start.tag : e->data.sequence_start.tag;
    const yaml_char_t *anchor = is_map ? e->data.mapping_start.anchor : e->data.sequence_start.anchor;
    int implicit = (is_map ? e->data.mapping_start.implicit : e->data.sequence_start.implicit) != 0;
    int style = is_map ? (int)e->data.mapping_start.style : (int)e->data.sequence_start.style;
    if (tagged(tag)) {
        s->refused = 1;
        return 0;
    }
    PyObject *cls = is_map ? s->map_cls : s->seq_cls;
    PyObject *t = kind_tag(s, is_map ? &s->map_tag[implicit] : &s->seq_tag[implicit], cls, Py_None,
                           implicit ? Py_True : Py_False);
    if (t == NULL)
        return -1;
    PyObject *flow = Py_None;
    if (style == (is_map ? YAML_FLOW_MAPPING_STYLE : YAML_FLOW_SEQUENCE_STYLE))
        flow = Py_True;
    else if (style == (is_map ? YAML_BLOCK_MAPPING_STYLE : YAML_BLOCK_SEQUENCE_STYLE))
        flow = Py_False;
    PyObject *items = PyList_New(0);
    PyObject *start = items ? new_mark(e->start_mark) : NULL;
    PyObject *node = start ? new_node(cls, t, items, start, Py_None, S_FLOW_STYLE, flow) : NULL;
    Py_XDECREF(start);
    if (node == NULL) {
        Py_XDECREF(items);
        return -1;
    }
    Py_DECREF(items); /* the node holds it */
    if (remember_anchor(s, anchor, node) < 0) {
        Py_DECREF(node);
        return -1;
    }
    if (place(s, node) < 0) /* place() takes the reference, placed or not */
        return -1;
    if (s->refused)
        return 0;
    /* Placed first, as PyYAML does (an anchor on it is usable inside it): the parent's list, or
       `root`, owns the node while it is filled. A mapping's key node is placed the same way. */
    return push(s, node, items, is_map);
}

static int on_end(State *s, yaml_event_t *e)
{
    Frame *f = &s->stack[s->depth - 1];
    if (f->key != NULL) { /* cannot happen with an event stream libyaml accepted */
        s->refused = 1;
        return 0;
    }
    PyObject *end = new_mark(e->end_mark);
    if (end == NULL)
        return -1;
    int rc = PyObject_SetAttr(f->node, S_END_MARK, end);
    Py_DECREF(end);
    s->depth--;
    return rc;
}

static int on_alias(State *s, yaml_event_t *e)
{
    PyObject *name = PyUnicode_FromString((const char *)e->data.alias.anchor);
    if (name == NULL)
        return -1;
    PyObject *node = PyDict_GetItemWithError(s->anchors, name);
    Py_DECREF(name);
    if (node == NULL) {
        if (PyErr_Occurred())
            return -1;
        s->refused = 1; /* an undefined alias */
        return 0;
    }
    Py_INCREF(node);
    return place(s, node);
}

static void clear(State *s)
{
    for (Py_ssize_t i = 0; i < s->depth; i++)
        Py_CLEAR(s->stack[i].key);
    PyMem_Free(s->stack);
    Py_CLEAR(s->plain_tags);
    Py_CLEAR(s->quoted_tag);
    for (int i = 0; i < 2; i++) {
        Py_CLEAR(s->seq_tag[i]);
        Py_CLEAR(s->map_tag[i]);
    }
    Py_CLEAR(s->anchors);
    Py_CLEAR(s->root);
}

static PyObject *compose(PyObject *self, PyObject *args)
{
    PyObject *text;
    State s = {0};
    if (!PyArg_ParseTuple(args, "UOOOOn:compose", &text, &s.resolve, &s.scalar_cls, &s.seq_cls, &s.map_cls,
                          &s.max_depth))
        return NULL;
    if (!PyType_Check(s.scalar_cls) || !PyType_Check(s.seq_cls) || !PyType_Check(s.map_cls)) {
        PyErr_SetString(PyExc_TypeError, "compose: the node classes must be classes");
        return NULL;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) { /* a lone surrogate: the pure-Python composer's to read */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    s.plain_tags = PyDict_New();
    s.anchors = PyDict_New();
    if (s.plain_tags == NULL || s.anchors == NULL) {
        clear(&s);
        return NULL;
    }
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        clear(&s);
        return PyErr_NoMemory();
    }
    /* As PyYAML's CParser: the encoding is libyaml's to detect (UTF-8, a BOM skipped). */
    yaml_parser_set_input_string(&parser, (const unsigned char *)utf8, (size_t)size);
    int documents = 0, failed = 0, done = 0;
    while (!done && !failed && !s.refused) {
        yaml_event_t e;
        if (!yaml_parser_parse(&parser, &e)) {
            s.refused = 1; /* libyaml refuses it: the pure-Python composer says why */
            break;
        }
        int rc = 0;
        switch (e.type) {
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++documents > 1)
                s.refused = 1; /* PyYAML: expected a single document */
            break;
        case YAML_SCALAR_EVENT: rc = on_scalar(&s, &e); break;
        case YAML_SEQUENCE_START_EVENT: rc = on_start(&s, &e, 0); break;
        case YAML_MAPPING_START_EVENT: rc = on_start(&s, &e, 1); break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: rc = on_end(&s, &e); break;
        case YAML_ALIAS_EVENT: rc = on_alias(&s, &e); break;
        default: break; /* stream start, document end */
        }
        yaml_event_delete(&e);
        failed = rc < 0;
    }
    yaml_parser_delete(&parser);
    if (failed) {
        clear(&s);
        return NULL;
    }
    if (s.refused || s.depth != 0) {
        clear(&s);
        Py_RETURN_NONE;
    }
    PyObject *out = PyTuple_Pack(1, s.root ? s.root : Py_None);
    clear(&s);
    return out;
}

static PyMethodDef methods[] = {
    {"compose", compose, METH_VARARGS,
     "compose(text, resolve, ScalarNode, SequenceNode, MappingNode, max_depth) -> (root,), or None "
     "where the pure-Python composer must answer"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_yamlcompose_c",
    .m_doc = "agent/config.py's YAML composer over libyaml (see _yamlcompose.c).",
    .m_size = -1,
    .m_methods = methods,
};

static PyObject *intern(const char *s)
{
    return PyUnicode_InternFromString(s);
}

PyMODINIT_FUNC PyInit__yamlcompose_c(void)
{
    if (PyType_Ready(&MarkType) < 0)
        return NULL;
    STREAM_NAME = intern("<unicode string>");
    S_TAG = intern("tag");
    S_VALUE = intern("value");
    S_START_MARK = intern("start_mark");
    S_END_MARK = intern("end_mark");
    S_STYLE = intern("style");
    S_FLOW_STYLE = intern("flow_style");
    STYLE_SINGLE = intern("'");
    STYLE_DOUBLE = intern("\"");
    STYLE_LITERAL = intern("|");
    STYLE_FOLDED = intern(">");
    EMPTY_TUPLE = PyTuple_New(0);
    if (!STREAM_NAME || !S_TAG || !S_VALUE || !S_START_MARK || !S_END_MARK || !S_STYLE || !S_FLOW_STYLE
        || !STYLE_SINGLE || !STYLE_DOUBLE || !STYLE_LITERAL || !STYLE_FOLDED || !EMPTY_TUPLE)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&MarkType);
    if (PyModule_AddObject(m, "Mark", (PyObject *)&MarkType) < 0) {
        Py_DECREF(&MarkType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
