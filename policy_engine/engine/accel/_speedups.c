/* The fused gate functions' native helpers (issue 16, goal 1): optional, built when a C
 * compiler is there (setup.py: an optional extension), switched off by
 * STOPLINE_NATIVE=0, and proven equal to the generated Python they replace by
 * tests/test_native_speedups.py and the differential tests (see accel/native.py).
 *
 * Checker(keys, kinds, base, limit, shape_miss, fallback)(action) -> tuple
 *     The input check of a fused gate function whose fields are all present scalars of
 *     one shape each (shapes.lane_prologue): each field fetched (a missing one raises
 *     shape_miss), its exact type proved (another raises shape_miss), a str without
 *     unpaired surrogates and a float finite (else fallback), and the characters counted
 *     (over `limit` raises fallback). The same checks, in the same order, as the lines
 *     it replaces; the values returned in key order.
 *
 * Maker(cls, dict_descr, fs_descr, key)
 *     key None:  maker(tpl, fields_set) -> cls object with __dict__ tpl (not copied)
 *     key a str: maker(x, value) -> cls object with __dict__ a copy of x[0] with
 *                x[key] = value, and fields set x[1]
 *     What `object.__new__(cls)` and the two slot setters do, in one call.
 *
 * Gate(func, engine_type, quick, fz_type, fn, wname, running, policy, utc, clock, json)
 *     Engine.evaluate's (json false) or Engine.evaluate_json's (json true) quick path
 *     (engine/__init__.py): a plain dict of a type whose fused gate is built, no workflow
 *     state, `now` a datetime in UTC or omitted (the clock's): the fused function called
 *     as the method calls it, and its Decision (or, for evaluate_json, the text its fields
 *     set renders) returned. Anything else (another call, an int, an exception or another
 *     result from the function) is `func`'s, the Python method, which decides it (and
 *     calls the function again). A method descriptor: `engine.evaluate(...)` calls it
 *     without a bound method. `quick`, `fn`, `wname`, `running` and `policy` are the
 *     slots' descriptors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <datetime.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------ Checker */

/* A field's spec (Checker's `spec`, one per key), as shapes.lane_prologue specialises:
 *   (c,)          a scalar: c is s (str), i (int), b (bool), f (float) or n (None)
 *   ("L", c)      a list of c (s, i, b or f); "s" also takes the empty list
 *   ("D", subs)   a flat object of exactly the keys of subs, each its scalar
 *   ("R", subs)   a list of records: each an object of exactly those keys and scalars
 * where subs is ((key, c), ...). A flat object's values follow it in the tuple returned. */

typedef struct {
    char kind;            /* s i b f n L D R */
    char item;            /* L: the items' code */
    Py_ssize_t nsub;      /* D, R: the keys */
    PyObject **subkeys;   /* borrowed from spec */
    char *subcodes;
    Py_ssize_t keychars;  /* D, R: the keys' characters */
    PyObject *keyset;     /* D: frozenset of its keys (owned; the lines' `_K{i}`) */
    Py_ssize_t pos;       /* where its value goes in the tuple returned */
} Field;

typedef struct {
    PyObject_HEAD
    PyObject *keys;       /* tuple of str */
    PyObject *spec;       /* tuple of field specs (kept: Field borrows from it) */
    Field *fields;
    Py_ssize_t nout;      /* the values returned */
    Py_ssize_t base_items, max_items;
    Py_ssize_t base_chars, max_chars;
    PyObject *shape_miss; /* exception classes */
    PyObject *fallback;
    vectorcallfunc vectorcall;
} Checker;

enum { OK = 0, MISS = 1, FALLBACK = 2, ERROR = 3 };

static PyObject *str_keys_name;  /* "keys" (interned at import, as the other names below) */

static int
has_surrogate(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), i;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (kind == PyUnicode_1BYTE_KIND)
        return 0;
    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF)
            return 1;
    }
    return 0;
}

/* one scalar: its exact type (else MISS), then a str without unpaired surrogates and a
 * finite float (else FALLBACK); a str's characters added to *chars */
static inline int
check_scalar(char code, PyObject *v, Py_ssize_t *chars)
{
    switch (code) {
    case 's':
        if (!PyUnicode_CheckExact(v))
            return MISS;
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(v) < 0)  /* (a legacy string of the deprecated C API) */
            return ERROR;
#endif
        *chars += PyUnicode_GET_LENGTH(v);
        if (!PyUnicode_IS_ASCII(v) && has_surrogate(v))
            return FALLBACK;
        return OK;
    case 'i':
        return PyLong_CheckExact(v) ? OK : MISS;
    case 'b':
        return PyBool_Check(v) ? OK : MISS;
    case 'f':
        if (!PyFloat_CheckExact(v))
            return MISS;
        return isfinite(PyFloat_AS_DOUBLE(v)) ? OK : FALLBACK;
    case 'n':
        return v == Py_None ? OK : MISS;
    }
    return MISS;
}

/* every key of dict d exactly a str */
static inline int
str_keys(PyObject *d)
{
    Py_ssize_t i = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &i, &k, &v))
        if (!PyUnicode_CheckExact(k))
            return 0;
    return 1;
}

/* a dict lookup as the lines' `d[key]` inside their `try: ... except KeyError: _fs()`:
 * the value (borrowed), else NULL with *r MISS (absent, or a KeyError raised by a key's
 * __eq__) or ERROR (any other exception) */
static inline PyObject *
fetch(PyObject *d, PyObject *key, int *r)
{
    PyObject *w = PyDict_GetItemWithError(d, key);
    if (w == NULL) {
        if (!PyErr_Occurred())
            *r = MISS;
        else if (PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
            *r = MISS;
        }
        else
            *r = ERROR;
    }
    return w;
}

/* one field's checks, as its lines; a list's own length is counted at the end (the
 * lines' totals read `len(v)` then: see list_counts) */
static int
check_field(Checker *self, Field *f, PyObject *v, PyObject *out, Py_ssize_t *chars)
{
    Py_ssize_t n, i, j;
    int r;
    PyObject *w;
    switch (f->kind) {
    case 'L':
        if (!PyList_CheckExact(v))
            return MISS;
        n = PyList_GET_SIZE(v);
        if (n > self->max_items)
            return FALLBACK;
        if (f->item == 's') {  /* every item's type first, then the characters (one join) */
            for (i = 0; i < PyList_GET_SIZE(v); i++)
                if (!PyUnicode_CheckExact(PyList_GET_ITEM(v, i)))
                    return MISS;
            r = OK;
            for (i = 0; i < PyList_GET_SIZE(v); i++) {
                w = PyList_GET_ITEM(v, i);
#if PY_VERSION_HEX < 0x030C0000
                if (PyUnicode_READY(w) < 0)
                    return ERROR;
#endif
                *chars += PyUnicode_GET_LENGTH(w);
                if (r == OK && !PyUnicode_IS_ASCII(w) && has_surrogate(w))
                    r = FALLBACK;
            }
            return r;
        }
        for (i = 0; i < PyList_GET_SIZE(v); i++) {
            r = check_scalar(f->item, PyList_GET_ITEM(v, i), chars);
            if (r != OK)
                return r;
        }
        return OK;
    case 'D':
        /* the lines: `type(v) is not dict or v.keys() != _K` (miss), every key exactly a
         * str (miss), then each value fetched and checked in turn. With every key an exact
         * str (no code of the caller's runs in a lookup) the keys equal _K when there are
         * as many and each is found; else the comparison itself is made, which may run a
         * key's __hash__ and __eq__ (and raise, or change the dict) as the lines' does */
        if (!PyDict_CheckExact(v))
            return MISS;
        r = MISS;  /* a key not found: _K differs */
        if (!str_keys(v)) {
            int ne;
            PyObject *view = PyObject_CallMethodNoArgs(v, str_keys_name);
            if (view == NULL)
                return ERROR;
            ne = PyObject_RichCompareBool(view, f->keyset, Py_NE);
            Py_DECREF(view);
            if (ne < 0)
                return ERROR;
            if (ne || !str_keys(v))  /* (the comparison may have changed the keys) */
                return MISS;
            r = ERROR;  /* the keys were equal: the lines' `v[key]` raises KeyError */
        }
        else if (PyDict_GET_SIZE(v) != f->nsub)
            return MISS;
        for (j = 0; j < f->nsub; j++) {
            w = PyDict_GetItemWithError(v, f->subkeys[j]);  /* (every key an exact str: no code runs) */
            if (w == NULL) {
                if (r == ERROR && !PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, f->subkeys[j]);
                return PyErr_Occurred() ? ERROR : r;
            }
            Py_INCREF(w);
            PyTuple_SET_ITEM(out, f->pos + 1 + j, w);
        }
        *chars += f->keychars;
        for (j = 0; j < f->nsub; j++) {
            r = check_scalar(f->subcodes[j], PyTuple_GET_ITEM(out, f->pos + 1 + j), chars);
            if (r != OK)
                return r;
        }
        return OK;
    case 'R':
        if (!PyList_CheckExact(v))
            return MISS;
        n = PyList_GET_SIZE(v);
        if (n > self->max_items)
            return FALLBACK;
        /* (a lookup may run a key's __eq__, which may change the list or the record) */
        for (i = 0; i < PyList_GET_SIZE(v); i++) {
            PyObject *x = PyList_GET_ITEM(v, i);
            if (!PyDict_CheckExact(x) || PyDict_GET_SIZE(x) != f->nsub)
                return MISS;
            Py_INCREF(x);
            for (j = 0; j < f->nsub; j++) {
                r = OK;
                w = fetch(x, f->subkeys[j], &r);
                if (w == NULL) {
                    Py_DECREF(x);
                    return r;
                }
                r = check_scalar(f->subcodes[j], w, chars);
                if (r != OK) {
                    Py_DECREF(x);
                    return r;
                }
            }
            r = str_keys(x);
            Py_DECREF(x);
            if (!r)
                return MISS;
        }
        return OK;
    default:
        return check_scalar(f->kind, v, chars);
    }
}

static PyObject *
checker_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Checker *self = (Checker *)self_;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), n, i, items, chars;
    PyObject *action, *out, *v;
    int r;
    if (nargs != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Checker takes one positional argument");
        return NULL;
    }
    action = args[0];
    n = PyTuple_GET_SIZE(self->keys);
    out = PyTuple_New(self->nout);
    if (out == NULL)
        return NULL;
    /* untracked while it holds NULLs: a key's __eq__ run by a lookup could otherwise find
     * it in gc.get_objects() and read them (tracked again when full) */
    if (self->nout > 0)
        PyObject_GC_UnTrack(out);
    /* every field fetched first (a missing one, or a KeyError: the shape missed), as the lines do */
    if (PyDict_CheckExact(action)) {
        for (i = 0; i < n; i++) {
            r = OK;
            v = fetch(action, PyTuple_GET_ITEM(self->keys, i), &r);
            if (v == NULL) {
                if (r == MISS)
                    goto miss;
                goto fail;
            }
            Py_INCREF(v);
            PyTuple_SET_ITEM(out, self->fields[i].pos, v);
        }
    }
    else {
        for (i = 0; i < n; i++) {
            v = PyObject_GetItem(action, PyTuple_GET_ITEM(self->keys, i));
            if (v == NULL) {
                if (PyErr_ExceptionMatches(PyExc_KeyError)) {
                    PyErr_Clear();
                    goto miss;
                }
                goto fail;
            }
            PyTuple_SET_ITEM(out, self->fields[i].pos, v);
        }
    }
    items = self->base_items;
    chars = self->base_chars;
    for (i = 0; i < n; i++) {
        r = check_field(self, &self->fields[i], PyTuple_GET_ITEM(out, self->fields[i].pos), out, &chars);
        if (r == MISS)
            goto miss;
        if (r == FALLBACK)
            goto fallback;
        if (r == ERROR)
            goto fail;
    }
    /* the totals, as the lines' last ones: lists by their lengths now (a key's __eq__ run
     * by a later field's lookup may have changed an earlier list) */
    for (i = 0; i < n; i++) {
        Field *f = &self->fields[i];
        if (f->kind == 'L' || f->kind == 'R') {
            Py_ssize_t len = PyList_GET_SIZE(PyTuple_GET_ITEM(out, f->pos));
            items += f->kind == 'L' ? len : len * (f->nsub + 1);
            if (f->kind == 'R')
                chars += len * f->keychars;
        }
        else if (f->kind == 'D')
            items += f->nsub;
    }
    if (items > self->max_items || chars > self->max_chars)
        goto fallback;
    if (self->nout > 0)
        PyObject_GC_Track(out);
    return out;
miss:
    PyErr_SetNone(self->shape_miss);
    goto fail;
fallback:
    PyErr_SetNone(self->fallback);
fail:
    Py_DECREF(out);
    return NULL;
}

static int
scalar_code(PyObject *c, char *out, const char *allowed)
{
    if (!PyUnicode_CheckExact(c) || PyUnicode_GET_LENGTH(c) != 1 || PyUnicode_READ_CHAR(c, 0) > 127 ||
        PyUnicode_READ_CHAR(c, 0) == 0 || !strchr(allowed, (int)PyUnicode_READ_CHAR(c, 0))) {
        PyErr_Format(PyExc_ValueError, "Checker: a code is one of %s", allowed);
        return -1;
    }
    *out = (char)PyUnicode_READ_CHAR(c, 0);
    return 0;
}

static void checker_free_fields(Checker *self);

static int
parse_spec(Checker *self)
{
    Py_ssize_t n = PyTuple_GET_SIZE(self->keys), i, j, pos = 0;
    if (!PyTuple_CheckExact(self->spec) || PyTuple_GET_SIZE(self->spec) != n) {
        PyErr_SetString(PyExc_ValueError, "Checker: one spec per key");
        return -1;
    }
    self->fields = PyMem_Calloc(n ? n : 1, sizeof(Field));
    if (self->fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *sp = PyTuple_GET_ITEM(self->spec, i);
        Field *f = &self->fields[i];
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(self->keys, i))) {
            PyErr_SetString(PyExc_TypeError, "Checker: keys are str");
            return -1;
        }
        if (!PyTuple_CheckExact(sp) || PyTuple_GET_SIZE(sp) < 1 ||
            scalar_code(PyTuple_GET_ITEM(sp, 0), &f->kind, "sibfnLDR") < 0)
            return -1;
        f->pos = pos++;
        if (f->kind == 'L') {
            if (PyTuple_GET_SIZE(sp) != 2 || scalar_code(PyTuple_GET_ITEM(sp, 1), &f->item, "sibf") < 0)
                return -1;
        }
        else if (f->kind == 'D' || f->kind == 'R') {
            PyObject *subs = PyTuple_GET_SIZE(sp) == 2 ? PyTuple_GET_ITEM(sp, 1) : NULL;
            if (subs == NULL || !PyTuple_CheckExact(subs) || PyTuple_GET_SIZE(subs) < 1) {
                PyErr_SetString(PyExc_ValueError, "Checker: an object's spec names its keys");
                return -1;
            }
            f->nsub = PyTuple_GET_SIZE(subs);
            f->subkeys = PyMem_Calloc(f->nsub, sizeof(PyObject *));
            f->subcodes = PyMem_Calloc(f->nsub, 1);
            if (f->subkeys == NULL || f->subcodes == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            for (j = 0; j < f->nsub; j++) {
                PyObject *kc = PyTuple_GET_ITEM(subs, j);
                if (!PyTuple_CheckExact(kc) || PyTuple_GET_SIZE(kc) != 2 ||
                    !PyUnicode_CheckExact(PyTuple_GET_ITEM(kc, 0))) {
                    PyErr_SetString(PyExc_ValueError, "Checker: an object's keys are (str, code) pairs");
                    return -1;
                }
                if (scalar_code(PyTuple_GET_ITEM(kc, 1), &f->subcodes[j], "sibfn") < 0)
                    return -1;
                f->subkeys[j] = PyTuple_GET_ITEM(kc, 0);
                f->keychars += PyUnicode_GET_LENGTH(f->subkeys[j]);
            }
            if (f->kind == 'D') {
                PyObject *ks = PyTuple_New(f->nsub);
                if (ks == NULL)
                    return -1;
                for (j = 0; j < f->nsub; j++)
                    PyTuple_SET_ITEM(ks, j, Py_NewRef(f->subkeys[j]));
                f->keyset = PyFrozenSet_New(ks);
                Py_DECREF(ks);
                if (f->keyset == NULL)
                    return -1;
                if (PySet_GET_SIZE(f->keyset) != f->nsub) {
                    PyErr_SetString(PyExc_ValueError, "Checker: an object's keys differ");
                    return -1;
                }
                pos += f->nsub;
            }
        }
        else if (PyTuple_GET_SIZE(sp) != 1) {
            PyErr_SetString(PyExc_ValueError, "Checker: a scalar's spec is its code alone");
            return -1;
        }
    }
    self->nout = pos;
    return 0;
}

static PyObject *
checker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *keys, *spec, *shape_miss, *fallback;
    Py_ssize_t base_items, max_items, base_chars, max_chars;
    Checker *self;
    static char *kwlist[] = {"keys", "spec", "base_items", "max_items", "base_chars", "max_chars", "shape_miss",
                             "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!nnnnOO", kwlist, &PyTuple_Type, &keys, &PyTuple_Type, &spec,
                                     &base_items, &max_items, &base_chars, &max_chars, &shape_miss, &fallback))
        return NULL;
    if (!PyExceptionClass_Check(shape_miss) || !PyExceptionClass_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Checker: shape_miss and fallback are exception classes");
        return NULL;
    }
    self = (Checker *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->keys = Py_NewRef(keys);
    self->spec = Py_NewRef(spec);
    self->base_items = base_items;
    self->max_items = max_items;
    self->base_chars = base_chars;
    self->max_chars = max_chars;
    self->shape_miss = Py_NewRef(shape_miss);
    self->fallback = Py_NewRef(fallback);
    self->vectorcall = checker_call;
    if (parse_spec(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
checker_traverse(Checker *self, visitproc visit, void *arg)
{
    Py_ssize_t i;
    Py_VISIT(self->keys);
    Py_VISIT(self->spec);
    for (i = 0; self->fields != NULL && self->keys != NULL && i < PyTuple_GET_SIZE(self->keys); i++)
        Py_VISIT(self->fields[i].keyset);
    Py_VISIT(self->shape_miss);
    Py_VISIT(self->fallback);
    return 0;
}

static void
checker_free_fields(Checker *self)
{
    Py_ssize_t i;
    if (self->fields == NULL)
        return;
    for (i = 0; self->keys != NULL && i < PyTuple_GET_SIZE(self->keys); i++) {
        PyMem_Free(self->fields[i].subkeys);
        PyMem_Free(self->fields[i].subcodes);
        Py_CLEAR(self->fields[i].keyset);
    }
    PyMem_Free(self->fields);
    self->fields = NULL;
}

static int
checker_clear(Checker *self)
{
    checker_free_fields(self);  /* (before the spec it borrows from) */
    Py_CLEAR(self->keys);
    Py_CLEAR(self->spec);
    Py_CLEAR(self->shape_miss);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
checker_dealloc(Checker *self)
{
    PyObject_GC_UnTrack(self);
    checker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CheckerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policy_engine.engine.accel._speedups.Checker",
    .tp_basicsize = sizeof(Checker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The input check of a fused gate function's fields (see the module's header).",
    .tp_new = checker_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Checker, vectorcall),
    .tp_traverse = (traverseproc)checker_traverse,
    .tp_clear = (inquiry)checker_clear,
    .tp_dealloc = (destructor)checker_dealloc,
};

/* -------------------------------------------------------------------- Maker */

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    PyObject *dict_descr; /* the __dict__ slot's descriptor */
    PyObject *fs_descr;   /* the fields-set slot's descriptor */
    PyObject *key;        /* None: (tpl, fs); a str: (x, value) */
    vectorcallfunc vectorcall;
} Maker;

static PyObject *
build(Maker *self, PyObject *dict, PyObject *fs)
{
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL)
        return NULL;
    if (Py_TYPE(self->dict_descr)->tp_descr_set(self->dict_descr, obj, dict) < 0 ||
        Py_TYPE(self->fs_descr)->tp_descr_set(self->fs_descr, obj, fs) < 0) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

static PyObject *
maker_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Maker *self = (Maker *)self_;
    PyObject *x, *d, *out;
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Maker takes two positional arguments");
        return NULL;
    }
    if (self->key == Py_None) {
        if (!PyDict_CheckExact(args[0])) {
            PyErr_SetString(PyExc_TypeError, "Maker: the fields are a dict");
            return NULL;
        }
        return build(self, args[0], args[1]);
    }
    x = args[0];
    if (!PyTuple_CheckExact(x) || PyTuple_GET_SIZE(x) < 2 || !PyDict_CheckExact(PyTuple_GET_ITEM(x, 0))) {
        PyErr_SetString(PyExc_TypeError, "Maker: a (fields, fields set, ...) tuple");
        return NULL;
    }
    d = PyDict_Copy(PyTuple_GET_ITEM(x, 0));
    if (d == NULL)
        return NULL;
    if (PyDict_SetItem(d, self->key, args[1]) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    out = build(self, d, PyTuple_GET_ITEM(x, 1));
    Py_DECREF(d);
    return out;
}

static PyObject *
maker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *cls, *dict_descr, *fs_descr, *key;
    Maker *self;
    static char *kwlist[] = {"cls", "dict_descr", "fs_descr", "key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOO", kwlist, &PyType_Type, &cls, &dict_descr, &fs_descr, &key))
        return NULL;
    if (Py_TYPE(dict_descr)->tp_descr_set == NULL || Py_TYPE(fs_descr)->tp_descr_set == NULL) {
        PyErr_SetString(PyExc_TypeError, "Maker: the descriptors set");
        return NULL;
    }
    /* slot descriptors of a base of cls (else an object of any type would be allocated
     * before the first setter refused it: what `object.__new__` refuses, a type, too) */
    if (!(Py_IS_TYPE(dict_descr, &PyGetSetDescr_Type) || Py_IS_TYPE(dict_descr, &PyMemberDescr_Type)) ||
        !(Py_IS_TYPE(fs_descr, &PyGetSetDescr_Type) || Py_IS_TYPE(fs_descr, &PyMemberDescr_Type)) ||
        !PyType_IsSubtype((PyTypeObject *)cls, ((PyDescrObject *)dict_descr)->d_type) ||
        !PyType_IsSubtype((PyTypeObject *)cls, ((PyDescrObject *)fs_descr)->d_type) ||
        PyType_IsSubtype((PyTypeObject *)cls, &PyType_Type)) {
        PyErr_SetString(PyExc_TypeError, "Maker: slot descriptors of a base of cls");
        return NULL;
    }
    if (key != Py_None && !PyUnicode_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "Maker: key is None or a str");
        return NULL;
    }
    self = (Maker *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->cls = (PyTypeObject *)Py_NewRef(cls);
    self->dict_descr = Py_NewRef(dict_descr);
    self->fs_descr = Py_NewRef(fs_descr);
    self->key = Py_NewRef(key);
    self->vectorcall = maker_call;
    return (PyObject *)self;
}

static int
maker_traverse(Maker *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cls);
    Py_VISIT(self->dict_descr);
    Py_VISIT(self->fs_descr);
    Py_VISIT(self->key);
    return 0;
}

static int
maker_clear(Maker *self)
{
    Py_CLEAR(self->cls);
    Py_CLEAR(self->dict_descr);
    Py_CLEAR(self->fs_descr);
    Py_CLEAR(self->key);
    return 0;
}

static void
maker_dealloc(Maker *self)
{
    PyObject_GC_UnTrack(self);
    maker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject MakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policy_engine.engine.accel._speedups.Maker",
    .tp_basicsize = sizeof(Maker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A pydantic model from its fields, unvalidated, in one call.",
    .tp_new = maker_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Maker, vectorcall),
    .tp_traverse = (traverseproc)maker_traverse,
    .tp_clear = (inquiry)maker_clear,
    .tp_dealloc = (destructor)maker_dealloc,
};

/* --------------------------------------------------------------------- Gate */

typedef struct {
    PyObject_HEAD
    PyObject *func;            /* the Python method: every call not taken here */
    PyTypeObject *engine_type;
    PyTypeObject *fz_type;
    Py_ssize_t quick_off, fn_off, wname_off, running_off, policy_off;
    PyObject *utc;
    PyObject *clock;           /* `now` omitted: the clock's time */
    int json;                  /* 0: evaluate (a Decision); 1: evaluate_json (its text) */
    PyObject *descrs;          /* the slots' descriptors: kept while their offsets are used */
    vectorcallfunc vectorcall;
} Gate;

static PyObject *str_type, *str_workflow, *str_render;

static inline PyObject *
slot_at(PyObject *o, Py_ssize_t off)
{
    return *(PyObject **)((char *)o + off);  /* borrowed; NULL when unset */
}

static PyObject *
gate_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Gate *self = (Gate *)self_;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *engine, *action, *now, *tname, *quick, *wname, *m, *r;
    /* strong references: a lookup in the action may run a key's __eq__ (and the clock, a
     * collection's finalizers), which may rebuild the fused gate, replacing its slots
     * (`FusedGate.build`, `missed`) and dropping the objects they held */
    PyObject *fz = NULL, *fn = NULL, *fzw = NULL, *running = NULL, *policy = NULL, *now_dt = NULL;
    PyObject *fargs[6];
    int eq, live;
    if (kwnames != NULL || nargs < 2 || nargs > 4)
        goto delegate;
    engine = args[0];
    action = args[1];
    now = nargs > 3 ? args[3] : Py_None;
    if (Py_TYPE(engine) != self->engine_type || !PyDict_CheckExact(action) || (nargs > 2 && args[2] != Py_None))
        goto delegate;
    live = now == Py_None;
    if (!live && (!PyDateTime_CheckExact(now) || PyDateTime_DATE_GET_TZINFO(now) != self->utc))
        goto delegate;
    /* a key that is not exactly a str: its __eq__ could run at each lookup (and raise the
     * first time only, or change the action); the Python method does each lookup once, as
     * the reference does. With exact str keys, no lookup below runs any code */
    {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(action, &pos, &k, &v))
            if (!PyUnicode_CheckExact(k))
                goto delegate;
    }
    tname = PyDict_GetItemWithError(action, str_type);  /* (borrowed: used before any other lookup) */
    if (tname == NULL || !PyUnicode_CheckExact(tname))
        goto delegate_clear;
    quick = slot_at(engine, self->quick_off);
    if (quick == NULL || !PyDict_CheckExact(quick))
        goto delegate;
    fz = PyDict_GetItemWithError(quick, tname);
    if (fz == NULL || Py_TYPE(fz) != self->fz_type) {
        fz = NULL;
        goto delegate_clear;
    }
    Py_INCREF(fz);
    fn = Py_XNewRef(slot_at(fz, self->fn_off));
    fzw = Py_XNewRef(slot_at(fz, self->wname_off));
    running = Py_XNewRef(slot_at(fz, self->running_off));
    policy = Py_XNewRef(slot_at(fz, self->policy_off));
    if (fn == NULL || fn == Py_None || fzw == NULL || !PyUnicode_CheckExact(fzw) || running == NULL ||
        policy == NULL)
        goto delegate_release;
    wname = PyDict_GetItemWithError(action, str_workflow);  /* (borrowed: compared at once) */
    if (wname == NULL || !PyUnicode_CheckExact(wname))
        goto delegate_release;
    eq = PyObject_RichCompareBool(wname, fzw, Py_EQ);  /* (two exact str: no code runs) */
    if (eq <= 0)
        goto delegate_release;
    if (live) {
        now_dt = PyObject_CallNoArgs(self->clock);
        if (now_dt == NULL || !PyDateTime_CheckExact(now_dt))
            goto delegate_release;
    }
    else
        now_dt = Py_NewRef(now);
    /* as the method calls it (engine/__init__.py): the fixed `now`'s call with two
     * arguments; the clock's with the running state, the policy and `live`; and
     * evaluate_json's with the digest computed at once too */
    fargs[0] = action;
    fargs[1] = now_dt;
    fargs[2] = running;
    fargs[3] = policy;
    fargs[4] = live ? Py_True : Py_False;
    fargs[5] = Py_True;
    m = PyObject_Vectorcall(fn, fargs, self->json ? 6 : (live ? 5 : 2), NULL);
    Py_CLEAR(fz);
    Py_CLEAR(fn);
    Py_CLEAR(fzw);
    Py_CLEAR(running);
    Py_CLEAR(policy);
    Py_CLEAR(now_dt);
    if (m == NULL)
        goto delegate_clear;
    if (!self->json) {
        if (Py_TYPE(m) != &PyLong_Type)
            return m;
        Py_DECREF(m);
        goto delegate;
    }
    /* evaluate_json: (fields, fields set) written by the fields set's `render` */
    if (!PyTuple_CheckExact(m) || PyTuple_GET_SIZE(m) != 2) {
        Py_DECREF(m);
        goto delegate;
    }
    r = PyObject_CallMethodObjArgs(PyTuple_GET_ITEM(m, 1), str_render, PyTuple_GET_ITEM(m, 0), Py_True, NULL);
    Py_DECREF(m);
    if (r == NULL)
        goto delegate_clear;
    if (PyUnicode_CheckExact(r))
        return r;
    Py_DECREF(r);
    goto delegate;
delegate_release:
    Py_XDECREF(fz);
    Py_XDECREF(fn);
    Py_XDECREF(fzw);
    Py_XDECREF(running);
    Py_XDECREF(policy);
    Py_XDECREF(now_dt);
delegate_clear:
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;  /* (KeyboardInterrupt and the like: as the method lets them through) */
        PyErr_Clear();
    }
delegate:
    return PyObject_Vectorcall(self->func, args, nargsf, kwnames);
}

static int
slot_offset(PyObject *descr, Py_ssize_t *off)
{
    PyMemberDef *d;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "Gate: a slot's member descriptor");
        return -1;
    }
    d = ((PyMemberDescrObject *)descr)->d_member;
    if (d->type != T_OBJECT_EX && d->type != T_OBJECT) {
        PyErr_SetString(PyExc_TypeError, "Gate: an object slot");
        return -1;
    }
    *off = d->offset;
    return 0;
}

static PyObject *
gate_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *func, *engine_type, *quick, *fz_type, *fn, *wname, *running, *policy, *utc, *clock;
    int json;
    Gate *self;
    Py_ssize_t qo, fo, wo, ro, po;
    static char *kwlist[] = {"func", "engine_type", "quick", "fz_type", "fn", "wname", "running", "policy", "utc",
                             "clock", "json", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OO!OOOOOOp", kwlist, &func, &PyType_Type, &engine_type, &quick,
                                     &PyType_Type, &fz_type, &fn, &wname, &running, &policy, &utc, &clock, &json))
        return NULL;
    if (!PyCallable_Check(func) || !PyCallable_Check(clock)) {
        PyErr_SetString(PyExc_TypeError, "Gate: func and clock are callable");
        return NULL;
    }
    if (slot_offset(quick, &qo) < 0 || slot_offset(fn, &fo) < 0 || slot_offset(wname, &wo) < 0 ||
        slot_offset(running, &ro) < 0 || slot_offset(policy, &po) < 0)
        return NULL;
    if (((PyDescrObject *)quick)->d_type != (PyTypeObject *)engine_type ||
        ((PyDescrObject *)fn)->d_type != (PyTypeObject *)fz_type ||
        ((PyDescrObject *)wname)->d_type != (PyTypeObject *)fz_type ||
        ((PyDescrObject *)running)->d_type != (PyTypeObject *)fz_type ||
        ((PyDescrObject *)policy)->d_type != (PyTypeObject *)fz_type) {
        PyErr_SetString(PyExc_TypeError, "Gate: the slots of engine_type and fz_type");
        return NULL;
    }
    self = (Gate *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->func = Py_NewRef(func);
    self->engine_type = (PyTypeObject *)Py_NewRef(engine_type);
    self->fz_type = (PyTypeObject *)Py_NewRef(fz_type);
    self->quick_off = qo;
    self->fn_off = fo;
    self->wname_off = wo;
    self->running_off = ro;
    self->policy_off = po;
    self->utc = Py_NewRef(utc);
    self->clock = Py_NewRef(clock);
    self->json = json;
    self->descrs = PyTuple_Pack(5, quick, fn, wname, running, policy);
    if (self->descrs == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = gate_call;
    return (PyObject *)self;
}

static PyObject *
gate_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
gate_getattro(PyObject *self, PyObject *name)
{
    /* its own attributes, else the method's (__name__, __qualname__, __module__, ...) */
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        r = PyObject_GetAttr(((Gate *)self)->func, name);
    }
    return r;
}

static PyObject *
gate_get_wrapped(Gate *self, void *closure)
{
    return Py_NewRef(self->func);
}

static PyObject *
gate_get_doc(Gate *self, void *closure)
{
    return PyObject_GetAttrString(self->func, "__doc__");
}

static PyObject *
gate_reduce(Gate *self, PyObject *unused)
{
    /* by name, as the function it stands for: pickle and copy find it as `Engine.evaluate` */
    return PyObject_GetAttrString(self->func, "__qualname__");
}

static PyMethodDef gate_methods[] = {
    {"__reduce__", (PyCFunction)gate_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef gate_getset[] = {
    {"__wrapped__", (getter)gate_get_wrapped, NULL, "the Python method", NULL},
    {"__doc__", (getter)gate_get_doc, NULL, NULL, NULL},
    {NULL},
};

static int
gate_traverse(Gate *self, visitproc visit, void *arg)
{
    Py_VISIT(self->func);
    Py_VISIT(self->engine_type);
    Py_VISIT(self->fz_type);
    Py_VISIT(self->utc);
    Py_VISIT(self->clock);
    Py_VISIT(self->descrs);
    return 0;
}

static int
gate_clear(Gate *self)
{
    Py_CLEAR(self->func);
    Py_CLEAR(self->engine_type);
    Py_CLEAR(self->fz_type);
    Py_CLEAR(self->utc);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->descrs);
    return 0;
}

static void
gate_dealloc(Gate *self)
{
    PyObject_GC_UnTrack(self);
    gate_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policy_engine.engine.accel._speedups.Gate",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = gate_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Gate, vectorcall),
    .tp_descr_get = gate_descr_get,
    .tp_getattro = gate_getattro,
    .tp_methods = gate_methods,
    .tp_getset = gate_getset,
    .tp_traverse = (traverseproc)gate_traverse,
    .tp_clear = (inquiry)gate_clear,
    .tp_dealloc = (destructor)gate_dealloc,
};

/* ------------------------------------------------------------------- Quiet */

/* Quiet(roots, prefix): keeps a loaded engine's compiled objects out of the cyclic
   collector's walks (issue 16, goal 5: a loaded engine adds no full-collection pause to its
   host) while it lives, and hands them back to the collector when it is deallocated (the
   engine's last reference gone).

   The walk starts at `roots` and goes down through every object the collector tracks that is
   an exact tuple, dict or frozenset, or an instance of a class whose own `__module__` (its
   dict's, as the class statement set it) starts with `prefix` and whose deallocation is the
   interpreter's own for classes (`subtype_dealloc`; no `__del__`); it goes through a
   mappingproxy without taking it. The walk only reads: it calls no Python code (no
   attribute hook, hash or comparison of a metaclass), allocates no object the collector
   tracks, and an error (a MemoryError) leaves everything as it was.

   Then each object taken is moved from the collector's generation lists into a list of this
   object's own (`head`), as `gc.freeze()` moves every object into its permanent generation:
   the collector walks only its generations, so it no longer walks these, yet each stays
   *tracked* (`gc.is_tracked()`, `_PyObject_GC_IS_TRACKED`). That matters: CPython untracks
   a tuple or dict when it holds nothing that may be tracked, and it reads "an untracked
   tuple" as such an atom (`_PyObject_GC_MAY_BE_TRACKED`: a tuple made of them is untracked
   by the next collection, a dict of them never tracked), and a copy of an untracked dict
   (`dict(d)`, `d.copy()`, `{**d}`) or an instance's `__dict__` made from its inline values
   is untracked as well; so untracking these objects (PyObject_GC_UnTrack) would leave such
   containers, made while the engine lives, untracked for good, and a cycle through one of
   them leaked after the engine goes. This object holds a reference to each object it took,
   so none can be garbage while it lives (a collection that does not walk them only takes
   them and what they refer to as referenced from outside, which they are); when it goes, each
   still in its list is put back in the collector's youngest generation (PyObject_GC_UnTrack
   unlinks it from this list, PyObject_GC_Track links it there) before its reference is
   dropped. An object another Quiet takes meanwhile moves to that one's list.

   The header this relies on, two words before the object (`PyGC_Head`: `_gc_next`, 0 when
   untracked; `_gc_prev`, whose two low bits are flags), is CPython's internal layout
   (Include/internal/pycore_gc.h), the same in 3.11, 3.12 and 3.13 with the GIL; it is
   checked against PyObject_GC_IsTracked and the list links at import, and Quiet refuses
   (NotImplementedError) on any other build. A cycle that passes through the objects taken
   *and* through the engine itself cannot be collected while it exists (the engine's
   objects hold no reference back to it). */

typedef struct {
    uintptr_t next;     /* PyGC_Head._gc_next */
    uintptr_t prev;     /* PyGC_Head._gc_prev: the previous header | two flag bits */
} QuietGC;

#define QUIET_AS_GC(o) ((QuietGC *)(o) - 1)
#define QUIET_FROM_GC(g) ((PyObject *)((QuietGC *)(g) + 1))
#define QUIET_FLAGS ((uintptr_t)3)

#if !defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#define QUIET_LAYOUT_KNOWN 1
#else
#define QUIET_LAYOUT_KNOWN 0
#endif

typedef struct {
    uintptr_t *keys;    /* 0: empty */
    char *vals;
    size_t mask, used;
} QuietSet;

typedef struct {
    PyObject_HEAD
    QuietGC head;       /* the objects kept out of the collector's walks (a circular list) */
    PyObject *objs;     /* a reference to each object taken (a list; untracked: see quiet_new) */
    PyObject *weakreflist;
    PyObject *prefix;   /* the package whose classes' instances it takes (see quiet_takes) */
    QuietSet taken;     /* every object in objs, once `add` is first called (keys NULL before) */
} Quiet;

static destructor subtype_dealloc_ptr = NULL;  /* a Python class's tp_dealloc (module init) */
static int quiet_layout_ok = 0;                /* the header checked at module init */
static PyObject *str_module_attr = NULL;       /* "__module__" */

/* `o` (tracked) off the list it is in (a generation, or another Quiet's) and onto self's */
static void
quiet_link(Quiet *self, PyObject *o)
{
    QuietGC *h = &self->head, *g = QUIET_AS_GC(o), *last;
    PyObject_GC_UnTrack(o);
    last = (QuietGC *)(h->prev & ~QUIET_FLAGS);
    last->next = (uintptr_t)g;
    g->prev = (g->prev & QUIET_FLAGS) | (uintptr_t)last;
    g->next = (uintptr_t)h;
    h->prev = (uintptr_t)g;
}

/* every object still in self's list back in the collector's youngest generation */
static void
quiet_restore(Quiet *self)
{
    QuietGC *h = &self->head;
    if (h->next == 0)  /* never set up (quiet_new failed after tp_alloc) */
        return;
    while (h->next != (uintptr_t)h) {
        PyObject *o = QUIET_FROM_GC(h->next);
        PyObject_GC_UnTrack(o);  /* off this list */
        PyObject_GC_Track(o);
    }
}

/* a set of addresses (QuietSet: open addressing, linear probing; the walk's "reached
   before", its memo of classes, and what `add` took: no object allocated, no Python code) */

static int
quietset_init(QuietSet *s, size_t cap)
{
    s->keys = PyMem_Calloc(cap, sizeof(uintptr_t));
    s->vals = PyMem_Calloc(cap, 1);
    s->mask = cap - 1;
    s->used = 0;
    if (s->keys == NULL || s->vals == NULL) {
        PyMem_Free(s->keys);
        PyMem_Free(s->vals);
        s->keys = NULL;
        s->vals = NULL;
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
quietset_free(QuietSet *s)
{
    PyMem_Free(s->keys);
    PyMem_Free(s->vals);
    s->keys = NULL;
    s->vals = NULL;
}

static size_t
quietset_slot(const QuietSet *s, uintptr_t k)
{
    uint64_t h = (uint64_t)(k >> 4) * 0x9E3779B97F4A7C15ULL;
    size_t i = (size_t)(h ^ (h >> 32)) & s->mask;
    while (s->keys[i] != 0 && s->keys[i] != k)
        i = (i + 1) & s->mask;
    return i;
}

/* the value of k (0 or 1), or -1 if k is not in s */
static int
quietset_get(const QuietSet *s, const void *k)
{
    size_t i = quietset_slot(s, (uintptr_t)k);
    return s->keys[i] != 0 ? s->vals[i] : -1;
}

static int
quietset_put(QuietSet *s, const void *k, char v)
{
    size_t i;
    if (2 * (s->used + 1) > s->mask + 1) {  /* grow at half full */
        QuietSet n;
        size_t j;
        if (quietset_init(&n, 2 * (s->mask + 1)) < 0)
            return -1;
        for (j = 0; j <= s->mask; j++)
            if (s->keys[j] != 0) {
                size_t t = quietset_slot(&n, s->keys[j]);
                n.keys[t] = s->keys[j];
                n.vals[t] = s->vals[j];
            }
        n.used = s->used;
        quietset_free(s);
        *s = n;
    }
    i = quietset_slot(s, (uintptr_t)k);
    if (s->keys[i] == 0) {
        s->keys[i] = (uintptr_t)k;
        s->used++;
    }
    s->vals[i] = v;
    return 0;
}

/* room for `more` keys without growing (quietset_put then allocates nothing) */
static int
quietset_reserve(QuietSet *s, size_t more)
{
    size_t cap = s->mask + 1;
    QuietSet n;
    size_t j;
    if (2 * (s->used + more) <= cap)
        return 0;
    while (2 * (s->used + more) > cap)
        cap *= 2;
    if (quietset_init(&n, cap) < 0)
        return -1;
    for (j = 0; j <= s->mask; j++)
        if (s->keys[j] != 0) {
            size_t t = quietset_slot(&n, s->keys[j]);
            n.keys[t] = s->keys[j];
            n.vals[t] = s->vals[j];
        }
    n.used = s->used;
    quietset_free(s);
    *s = n;
    return 0;
}

typedef struct {
    PyObject *stack;    /* the objects to visit (a list) */
    QuietSet seen;      /* the objects visited */
} QuietWalk;

static int
quiet_push(PyObject *o, void *arg)
{
    /* an object the collector does not track is not a container, or CPython untracked it
       because it holds nothing that may be tracked (a tuple or dict of atoms) */
    QuietWalk *w = (QuietWalk *)arg;
    if (o != NULL && PyObject_GC_IsTracked(o) && quietset_get(&w->seen, o) < 0)
        return PyList_Append(w->stack, o);
    return 0;
}

/* 1: take it; 0: leave it; -1: error. Calls no Python code: `memo` is keyed by the type's
   address, `__module__` read from the type's own dict (a class statement's). */
static int
quiet_takes(PyTypeObject *tp, PyObject *prefix, QuietSet *memo)
{
    PyObject *mod;
    int ok;
    if (tp == &PyTuple_Type || tp == &PyDict_Type || tp == &PyFrozenSet_Type)
        return 1;
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) || subtype_dealloc_ptr == NULL || tp->tp_dealloc != subtype_dealloc_ptr
        || tp->tp_finalize != NULL || tp->tp_del != NULL || tp->tp_dict == NULL || !PyDict_CheckExact(tp->tp_dict))
        return 0;
    ok = quietset_get(memo, tp);
    if (ok >= 0)
        return ok;
    mod = PyDict_GetItemWithError(tp->tp_dict, str_module_attr);  /* borrowed */
    if (mod == NULL && PyErr_Occurred())
        return -1;
    ok = mod != NULL && PyUnicode_CheckExact(mod) && PyUnicode_Tailmatch(mod, prefix, 0, PY_SSIZE_T_MAX, -1) == 1;
    if (PyErr_Occurred() || quietset_put(memo, tp, (char)ok) < 0)
        return -1;
    return ok;
}

/* the objects to take (a new list), or NULL with an exception; changes nothing */
static PyObject *
quiet_walk(PyObject *roots, PyObject *prefix)
{
    PyObject *stack, *objs = NULL;
    QuietSet memo = {NULL, NULL, 0, 0};
    QuietWalk w = {NULL, {NULL, NULL, 0, 0}};
    stack = w.stack = PySequence_List(roots);
    if (stack == NULL)
        return NULL;
    objs = PyList_New(0);
    if (objs == NULL || quietset_init(&memo, 64) < 0 || quietset_init(&w.seen, 4096) < 0)
        goto fail;
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t n = PyList_GET_SIZE(stack);
        PyObject *o = PyList_GET_ITEM(stack, n - 1);
        PyTypeObject *tp;
        int takes, r;
        Py_INCREF(o);
        if (PyList_SetSlice(stack, n - 1, n, NULL) < 0) {
            Py_DECREF(o);
            goto fail;
        }
        tp = Py_TYPE(o);
        if (!PyObject_GC_IsTracked(o) || quietset_get(&w.seen, o) >= 0) {  /* a root, or reached twice */
            Py_DECREF(o);
            continue;
        }
        takes = quiet_takes(tp, prefix, &memo);
        if (takes == 0 && tp != &PyDictProxy_Type) {  /* left, and not walked through */
            Py_DECREF(o);
            continue;
        }
        if (takes < 0 || quietset_put(&w.seen, o, 1) < 0 || (takes && PyList_Append(objs, o) < 0)) {
            Py_DECREF(o);
            goto fail;
        }
        r = tp->tp_traverse(o, quiet_push, &w);
        Py_DECREF(o);
        if (r < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "Quiet: an object's traversal failed");
            goto fail;
        }
    }
    Py_DECREF(stack);
    quietset_free(&memo);
    quietset_free(&w.seen);
    return objs;
fail:
    Py_DECREF(stack);
    Py_XDECREF(objs);
    quietset_free(&memo);
    quietset_free(&w.seen);
    return NULL;
}

static PyObject *
quiet_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *roots, *prefix, *objs;
    Quiet *self;
    Py_ssize_t i;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Quiet() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OU:Quiet", &roots, &prefix))
        return NULL;
    if (!quiet_layout_ok) {
        PyErr_SetString(PyExc_NotImplementedError, "Quiet: not on this build of Python");
        return NULL;
    }
    objs = quiet_walk(roots, prefix);
    if (objs == NULL)
        return NULL;
    self = (Quiet *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(objs);
        return NULL;
    }
    self->head.next = self->head.prev = (uintptr_t)&self->head;
    self->objs = objs;
    self->weakreflist = NULL;
    Py_INCREF(prefix);
    self->prefix = prefix;
    self->taken.keys = NULL;
    self->taken.vals = NULL;
    self->taken.mask = self->taken.used = 0;
    /* its own list is reachable from nothing else, and this object is no container the
       collector knows: a full collection need not walk its references */
    PyObject_GC_UnTrack(objs);
    /* no allocation, no Python code from here: the collector cannot run in between */
    for (i = 0; i < PyList_GET_SIZE(objs); i++) {
        PyObject *o = PyList_GET_ITEM(objs, i);
        if (PyObject_GC_IsTracked(o))
            quiet_link(self, o);
    }
    return (PyObject *)self;
}

static void
quiet_dealloc(Quiet *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    quiet_restore(self);  /* before any reference is dropped (they may run code) */
    quietset_free(&self->taken);
    Py_CLEAR(self->objs);
    Py_CLEAR(self->prefix);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
quiet_len(Quiet *self)
{
    return self->objs != NULL ? PyList_GET_SIZE(self->objs) : 0;
}

/* `o in q`: whether o is kept out of the collector's walks by q now */
static int
quiet_contains(Quiet *self, PyObject *o)
{
    QuietGC *h = &self->head;
    uintptr_t g;
    for (g = h->next; g != (uintptr_t)h; g = ((QuietGC *)g)->next)
        if (QUIET_FROM_GC(g) == o)
            return 1;
    return 0;
}

/* whether `add` takes an object of type tp: what the walk takes (quiet_takes), and the
   objects a fused gate's build makes of its code: functions, their cells, bound methods
   and Makers (none has a finaliser; the engine never changes one once made) */
static int
quiet_adds(PyTypeObject *tp, PyObject *prefix, QuietSet *memo)
{
    if (tp == &PyFunction_Type || tp == &PyCell_Type || tp == &PyMethod_Type || tp == &MakerType)
        return 1;
    return quiet_takes(tp, prefix, memo);
}

/* q.add(objs): each object of the iterable `objs` (no walk: exactly these) that the collector
   tracks, that q does not hold yet and that is of a kind `quiet_adds` takes, out of the
   collector's walks until q goes, as the objects Quiet() took; the others are left as they
   are. Returns how many it took. The caller vouches that each belongs to what holds q and
   lives as long (see fused.py: the objects a build made). An error (a MemoryError) leaves
   everything as it was. */
static PyObject *
quiet_add(Quiet *self, PyObject *arg)
{
    PyObject *cands, *accepted = NULL, *res = NULL;
    QuietSet memo = {NULL, NULL, 0, 0}, seen = {NULL, NULL, 0, 0};
    Py_ssize_t i, n, k, old;
    if (self->objs == NULL || self->prefix == NULL) {
        PyErr_SetString(PyExc_ValueError, "Quiet.add: not set up");
        return NULL;
    }
    /* every object the collector may run for is allocated first (a collection may run
       Python code, and another thread); from the checks on, nothing is */
    cands = PySequence_List(arg);
    if (cands == NULL)
        return NULL;
    accepted = PyList_New(0);
    if (accepted == NULL)
        goto fail;
    n = PyList_GET_SIZE(cands);
    if (quietset_init(&memo, 16) < 0 || quietset_init(&seen, 64) < 0)
        goto fail;
    if (self->taken.keys == NULL) {  /* first call: what Quiet() took */
        Py_ssize_t m = PyList_GET_SIZE(self->objs);
        QuietSet t;
        if (quietset_init(&t, 64) < 0)
            goto fail;
        if (quietset_reserve(&t, (size_t)m) < 0) {
            quietset_free(&t);
            goto fail;
        }
        for (i = 0; i < m; i++)
            (void)quietset_put(&t, PyList_GET_ITEM(self->objs, i), 1);  /* (reserved: no allocation) */
        self->taken = t;
    }
    for (i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(cands, i);
        int r;
        if (!PyObject_GC_IsTracked(o) || quietset_get(&self->taken, o) >= 0 || quietset_get(&seen, o) >= 0)
            continue;
        r = quiet_adds(Py_TYPE(o), self->prefix, &memo);
        if (r < 0)
            goto fail;
        if (r == 0)
            continue;
        if (quietset_put(&seen, o, 1) < 0 || PyList_Append(accepted, o) < 0)
            goto fail;
    }
    k = PyList_GET_SIZE(accepted);
    old = PyList_GET_SIZE(self->objs);
    res = PyLong_FromSsize_t(k);  /* (before any change: it may fail) */
    if (res == NULL)
        goto fail;
    if (k > 0) {
        if (quietset_reserve(&self->taken, (size_t)k) < 0 ||
            PyList_SetSlice(self->objs, old, old, accepted) < 0)  /* (one step: all or none) */
            goto fail;
        /* no allocation, no Python code from here: the collector cannot run in between */
        for (i = 0; i < k; i++) {
            PyObject *o = PyList_GET_ITEM(accepted, i);
            (void)quietset_put(&self->taken, o, 1);
            if (PyObject_GC_IsTracked(o))
                quiet_link(self, o);
        }
    }
    quietset_free(&memo);
    quietset_free(&seen);
    Py_DECREF(cands);
    Py_DECREF(accepted);
    return res;
fail:
    quietset_free(&memo);
    quietset_free(&seen);
    Py_DECREF(cands);
    Py_XDECREF(accepted);
    Py_XDECREF(res);
    return NULL;
}

static PyObject *
quiet_reduce(Quiet *self, PyObject *unused)
{
    PyErr_SetString(PyExc_TypeError, "cannot pickle a Quiet");
    return NULL;
}

static PySequenceMethods quiet_as_sequence = {
    .sq_length = (lenfunc)quiet_len,
    .sq_contains = (objobjproc)quiet_contains,
};

static PyMethodDef quiet_methods[] = {
    {"__reduce__", (PyCFunction)quiet_reduce, METH_NOARGS, NULL},
    {"add", (PyCFunction)quiet_add, METH_O, NULL},
    {NULL},
};

static PyTypeObject QuietType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policy_engine.engine.accel._speedups.Quiet",
    .tp_basicsize = sizeof(Quiet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A loaded engine's objects kept out of the cyclic collector's walks while it lives.",
    .tp_new = quiet_new,
    .tp_dealloc = (destructor)quiet_dealloc,
    .tp_as_sequence = &quiet_as_sequence,
    .tp_methods = quiet_methods,
    .tp_weaklistoffset = offsetof(Quiet, weakreflist),
};

/* since(mark): the objects the collector tracks that joined its youngest generation after
   `mark` (a list made then, still held: the generation's last object when it was made; new
   objects are linked after the last), latest first, as a new list; or None when `mark` is no
   longer in that generation (a collection, gc.freeze(), moved it: what was made since is then
   elsewhere, and only `mark`'s own generation's head is known here). Reads the links only; no
   object the collector tracks is allocated during the walk (the result and the end marker
   first), so no collection can run in it. A tuple held by nothing else is left out (another
   thread may be building it): its address is appended to the list `loose` when one is given.
   For a fused gate's build (`native.made`), the
   collector paused: O(the objects made since), not O(the generation). */
static PyObject *
quiet_since(PyObject *mod, PyObject *args)
{
    PyObject *mark, *loose = NULL, *res, *end;
    QuietGC *stop, *head, *g;
    if (!PyArg_ParseTuple(args, "O|O:since", &mark, &loose))
        return NULL;
    if (loose == Py_None)
        loose = NULL;
    if (loose != NULL && !PyList_CheckExact(loose)) {
        PyErr_SetString(PyExc_TypeError, "since: `loose` is a list");
        return NULL;
    }
    if (!quiet_layout_ok) {
        PyErr_SetString(PyExc_NotImplementedError, "since: not on this build of Python");
        return NULL;
    }
    if (!PyList_CheckExact(mark) || !PyObject_GC_IsTracked(mark)) {
        PyErr_SetString(PyExc_TypeError, "since: the mark is a tracked list");
        return NULL;
    }
    res = PyList_New(0);
    if (res == NULL)
        return NULL;
    end = PyList_New(0);  /* now the generation's last object: its next is the generation's head */
    if (end == NULL) {
        Py_DECREF(res);
        return NULL;
    }
    stop = QUIET_AS_GC(mark);
    head = (QuietGC *)QUIET_AS_GC(end)->next;
    for (g = (QuietGC *)(QUIET_AS_GC(end)->prev & ~QUIET_FLAGS); g != head && g != stop;
         g = (QuietGC *)(g->prev & ~QUIET_FLAGS)) {
        PyObject *o = QUIET_FROM_GC(g);
        /* a tuple nothing else refers to may be one another thread is still building
           (`tuple(generator)`: the generator let the thread go mid-way): a reference taken here
           makes its final `_PyTuple_Resize` fail ("bad argument to internal function"), and its
           unfilled items are NULL. Never referred to: its address goes to `loose` (an int, which
           the collector does not track), by which the caller knows it when it meets it held */
        if (PyTuple_Check(o) && Py_REFCNT(o) == 1) {
            if (loose != NULL) {
                PyObject *addr = PyLong_FromVoidPtr(o);
                if (addr == NULL || PyList_Append(loose, addr) < 0) {
                    Py_XDECREF(addr);
                    Py_DECREF(end);
                    Py_DECREF(res);
                    return NULL;
                }
                Py_DECREF(addr);
            }
            continue;
        }
        if (o != res && PyList_Append(res, o) < 0) {  /* (its items grow by PyMem: no collection) */
            Py_DECREF(end);
            Py_DECREF(res);
            return NULL;
        }
    }
    Py_DECREF(end);
    if (g != stop) {  /* the mark is elsewhere */
        Py_DECREF(res);
        Py_RETURN_NONE;
    }
    return res;
}

static PyMethodDef speedups_methods[] = {
    {"since", (PyCFunction)quiet_since, METH_VARARGS, NULL},
    {NULL},
};

/* whether the collector's header is where and what Quiet takes it to be (QuietGC): a new
   list is tracked, linked both ways among its neighbours, and its first word 0 once it is
   untracked */
static int
quiet_check_layout(void)
{
    PyObject *a;
    QuietGC *g, *next, *prev;
    int ok;
    if (!QUIET_LAYOUT_KNOWN)
        return 0;
    a = PyList_New(0);
    if (a == NULL)
        return -1;
    g = QUIET_AS_GC(a);
    ok = PyObject_GC_IsTracked(a) && g->next != 0 && (g->prev & ~QUIET_FLAGS) != 0;
    if (ok) {
        next = (QuietGC *)g->next;
        prev = (QuietGC *)(g->prev & ~QUIET_FLAGS);
        ok = (next->prev & ~QUIET_FLAGS) == (uintptr_t)g && prev->next == (uintptr_t)g;
    }
    if (ok) {
        PyObject_GC_UnTrack(a);
        ok = g->next == 0 && !PyObject_GC_IsTracked(a);
        PyObject_GC_Track(a);
        ok = ok && g->next != 0;
    }
    Py_DECREF(a);
    return ok;
}

/* ------------------------------------------------------------------- module */

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "policy_engine.engine.accel._speedups",
    .m_doc = "Native helpers of the fused gate functions (see accel/native.py).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    str_type = PyUnicode_InternFromString("type");
    str_workflow = PyUnicode_InternFromString("workflow");
    str_render = PyUnicode_InternFromString("render");
    str_keys_name = PyUnicode_InternFromString("keys");
    if (str_type == NULL || str_workflow == NULL || str_render == NULL || str_keys_name == NULL)
        return NULL;
    if (PyType_Ready(&CheckerType) < 0 || PyType_Ready(&MakerType) < 0 || PyType_Ready(&GateType) < 0 ||
        PyType_Ready(&QuietType) < 0)
        return NULL;
    {   /* the deallocation of every class a class statement makes (see Quiet) */
        PyObject *probe = PyObject_CallFunction((PyObject *)&PyType_Type, "s()N", "_probe", PyDict_New());
        if (probe == NULL)
            return NULL;
        subtype_dealloc_ptr = ((PyTypeObject *)probe)->tp_dealloc;
        Py_DECREF(probe);
        str_module_attr = PyUnicode_InternFromString("__module__");
        if (str_module_attr == NULL || (quiet_layout_ok = quiet_check_layout()) < 0)
            return NULL;
    }
    m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Checker", (PyObject *)&CheckerType) < 0 ||
        PyModule_AddObjectRef(m, "Maker", (PyObject *)&MakerType) < 0 ||
        PyModule_AddObjectRef(m, "Gate", (PyObject *)&GateType) < 0 ||
        PyModule_AddObjectRef(m, "Quiet", (PyObject *)&QuietType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
