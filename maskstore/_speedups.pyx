# cython: language_level=3, boundscheck=False, wraparound=False
"""Bulk ingest's per-frame work, compiled: Python's cost per object, not LMDB, bounded ingest.

``encode_common`` turns a frame dict of the usual shape (plain dicts, exact types, a given id, mask
statistics given, no ROIs) straight into its frame record: the bytes that
``records.encode_frame(model.normalize_frame_dict(frame))`` gives, without building the normalized
dict. Any other frame, valid or not, it declines, and the archive takes that one through
``model.normalize_frame``, which also owns every error message. So the rules live in Python; this
is a faster copy of their common case, and ``tests/test_speedups.py`` checks with hypothesis that
both give the same bytes, index keys and meta types.

``Postings`` is the one definition of a record's index keys, for writes, deletes, ``check`` and
repair alike.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, strlen

from unicodedata import is_normalized as _is_normalized

from ._fallback import MAX_DEPTH, MAX_FRAME_PIXELS, MAX_SIDE  # the limits, defined once for both twins

SOURCE_SHA256 = PYX_SHA256  # of this file, compiled in by setup.py: maskstore._accel refuses a stale build
MASK_IDS = tuple(f"{i:02d}" for i in range(100))
FRAME_FIELDS = ("id", "timestamp", "sources", "context_id", "meta", "rois")
SOURCE_FIELDS = ("id", "uri", "content_type", "timestamp", "width", "height", "masks")
MASK_FIELDS = ("id", "uri", "content_type", "timestamp", "values")

cdef enum:
    OK = 0
    DECLINE = 1


# ----------------------------------------------------------------------------- msgpack writer
# The subset of msgpack-python's ``packb(use_bin_type=True)`` that frame records use, byte for byte:
# exact None, bool, int, float, str, bytes, list, tuple and dict; anything else declines.

cdef class _Buffer:
    cdef unsigned char* data
    cdef Py_ssize_t size, capacity

    def __cinit__(self, Py_ssize_t capacity=1 << 16):
        self.capacity = capacity
        self.data = <unsigned char*>malloc(self.capacity)
        if self.data == NULL:
            raise MemoryError()
        self.size = 0

    def __dealloc__(self):
        free(self.data)

    cdef int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.size + extra
        cdef unsigned char* grown
        if need <= self.capacity:
            return 0
        need = max(need, 2 * self.capacity)
        grown = <unsigned char*>realloc(self.data, need)
        if grown == NULL:
            raise MemoryError()
        self.data = grown
        self.capacity = need
        return 0

    cdef int head(self, unsigned char first, unsigned long long value, int nbytes) except -1:
        """``first``, then the low ``nbytes`` of ``value`` big-endian."""
        self.reserve(1 + nbytes)
        self.data[self.size] = first
        cdef int i
        for i in range(nbytes):
            self.data[self.size + nbytes - i] = (value >> (8 * i)) & 0xff
        self.size += 1 + nbytes
        return 0

    cdef int byte(self, unsigned char value) except -1:
        self.reserve(1)
        self.data[self.size] = value
        self.size += 1
        return 0

    cdef int raw(self, const char* data, Py_ssize_t n) except -1:
        self.reserve(n)
        memcpy(self.data + self.size, data, n)
        self.size += n
        return 0

    cdef int append(self, _Buffer other) except -1:
        return self.raw(<const char*>other.data, other.size)

    cdef bytes take(self):
        return PyBytes_FromStringAndSize(<const char*>self.data, self.size)


cdef int _length(_Buffer out, Py_ssize_t n, unsigned char fix, int fix_max, unsigned char h16,
                 unsigned char h32) except -1:
    if n <= fix_max:
        return out.byte(fix | n)
    if n < 0x10000:
        return out.head(h16, n, 2)
    return out.head(h32, n, 4)


cdef int _array_header(_Buffer out, Py_ssize_t n) except -1:
    return _length(out, n, 0x90, 15, 0xdc, 0xdd)


cdef int _map_header(_Buffer out, Py_ssize_t n) except -1:
    return _length(out, n, 0x80, 15, 0xde, 0xdf)


cdef int _pack_int(_Buffer out, object value) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long u
    if overflow == 0:
        if v < -32:
            if v < -32768:
                return out.head(0xd3 if v < -2147483648 else 0xd2, <unsigned long long>v, 8 if v < -2147483648 else 4)
            return out.head(0xd1 if v < -128 else 0xd0, <unsigned long long>v, 2 if v < -128 else 1)
        if v < 128:
            return out.byte(<unsigned char>(v & 0xff))
        if v < 256:
            return out.head(0xcc, v, 1)
        if v < 65536:
            return out.head(0xcd, v, 2)
        if v < 4294967296:
            return out.head(0xce, v, 4)
        return out.head(0xcf, v, 8)
    if overflow < 0:
        return DECLINE
    try:
        u = PyLong_AsUnsignedLongLong(value)
    except OverflowError:
        return DECLINE
    return out.head(0xcf, u, 8)


cdef int _pack_str(_Buffer out, str text) except -1:
    cdef Py_ssize_t n
    cdef const char* data
    try:
        data = PyUnicode_AsUTF8AndSize(text, &n)
    except UnicodeEncodeError:
        return DECLINE
    if n < 32:
        out.byte(0xa0 | n)
    elif n < 256:
        out.head(0xd9, n, 1)
    elif n < 0x10000:
        out.head(0xda, n, 2)
    elif n < 0x100000000:
        out.head(0xdb, n, 4)
    else:
        return DECLINE
    return out.raw(data, n)


cdef int _pack(_Buffer out, object value, int depth) except -1:
    cdef double d
    cdef unsigned long long bits
    cdef Py_ssize_t n
    kind = type(value)
    if value is None:
        return out.byte(0xc0)
    if value is True:
        return out.byte(0xc3)
    if value is False:
        return out.byte(0xc2)
    if kind is int:
        return _pack_int(out, value)
    if kind is float:
        d = PyFloat_AS_DOUBLE(value)
        memcpy(&bits, &d, 8)
        return out.head(0xcb, bits, 8)
    if kind is str:
        return _pack_str(out, <str>value)
    if depth > MAX_DEPTH:
        return DECLINE
    if kind is list or kind is tuple:
        _array_header(out, len(value))
        for item in value:
            if _pack(out, item, depth + 1):
                return DECLINE
        return OK
    if kind is dict:
        _map_header(out, len(<dict>value))
        for key, item in (<dict>value).items():
            if _pack(out, key, depth + 1) or _pack(out, item, depth + 1):
                return DECLINE
        return OK
    if kind is bytes:
        n = len(<bytes>value)
        if n < 256:
            out.head(0xc4, n, 1)
        elif n < 0x10000:
            out.head(0xc5, n, 2)
        else:
            out.head(0xc6, n, 4)
        return out.raw(<bytes>value, n)
    return DECLINE


# ----------------------------------------------------------------------------- frames

def encode_common(list frames, bytes record_head, content_type_of, dict suffix_types, Postings postings):
    """``(records, ids, meta types)`` of a batch: per frame its record (``record_head`` + msgpack of
    the normalized frame), its id and the (dotted path, type) of its meta values as a tuple; all three
    ``None`` where the frame is declined. Index keys of the accepted frames go to ``postings``.

    ``content_type_of(uri)`` guesses a missing content type; ``suffix_types`` caches its answers per
    file suffix for URIs without a scheme, whose answer depends on the suffix alone.
    """
    cdef _Buffer out = _Buffer(), sources_out = _Buffer(), masks_out = _Buffer(), meta_out = _Buffer()
    cdef list records = [], ids = [], types_of = []
    cdef list media = []  # (id, None) per source, (id, values) per mask of the frame at hand
    cdef Py_ssize_t pos
    last_types = ()
    for pos in range(len(frames)):
        d = frames[pos]
        out.size = sources_out.size = meta_out.size = 0
        del media[:]
        out.raw(record_head, len(record_head))
        found = _frame(out, sources_out, masks_out, meta_out, media, d, content_type_of, suffix_types) \
            if type(d) is dict else None
        if found is None:
            records.append(None)
            ids.append(None)
            types_of.append(None)
            continue
        context, types = found
        if types == last_types:
            types = last_types  # one tuple for a run of frames alike: the archive merges each once
        last_types = types
        records.append(out.take())
        ids.append((<dict>d)["id"])
        types_of.append(types)
        postings.add_keys(pos, context, media)
    return records, ids, types_of


cdef object _frame(_Buffer out, _Buffer sources_out, _Buffer masks_out, _Buffer meta_out, list media, dict d,
                   content_type_of, dict suffix_types):
    """Writes the record body of ``d``; returns its context id and meta types, or None to decline."""
    frame_id = d.get("id")
    if type(frame_id) is not str or not frame_id:
        return None
    given_sources = d.get("sources")
    if given_sources is None:
        given_sources = []
    elif type(given_sources) is not list:
        return None
    cdef list sources = <list>given_sources
    ts = d.get("timestamp")
    if ts is None and sources and type(sources[0]) is dict:
        ts = (<dict>sources[0]).get("timestamp")
    if ts is None:
        ts = 0
    elif type(ts) is not int or not -(2**63) <= ts < 2**63:
        return None
    rois = d.get("rois")
    if rois is not None and (type(rois) is not list or rois):
        return None
    meta = d.get("meta")
    if meta is None:
        meta = {}
    elif type(meta) is not dict:
        return None
    cdef list types = []
    if not _meta_dict(<dict>meta, "", types, 0) or _pack(meta_out, meta, 1):
        return None
    if _sources(sources_out, masks_out, media, sources, ts, content_type_of, suffix_types) \
            or _pixel_total(media) > MAX_FRAME_PIXELS:
        return None
    context = d.get("context_id")
    if context is None:
        context = (<dict>sources[0])["uri"] if sources else frame_id
    elif type(context) is not str:
        return None
    if _normalized_map(out, d, FRAME_FIELDS, (frame_id, ts, sources_out, context, meta_out, []), 1):
        return None
    return context, tuple(types)


cdef int _normalized_map(_Buffer out, dict given, tuple fields, tuple normalized, int depth) except -1:
    """``dict(given)`` with ``fields[i]`` set to ``normalized[i]``, as msgpack: given keys in their
    order, then the fields it lacked. A ``_Buffer`` in ``normalized`` is a value packed already."""
    cdef Py_ssize_t i
    _map_header(out, len(given) + _missing(given, fields))
    for key, value in given.items():
        i = _field(key, fields)
        if i < 0:
            if _pack(out, key, depth) or _pack(out, value, depth):
                return DECLINE
        elif _normalized_field(out, fields[i], normalized[i], depth):
            return DECLINE
    for i in range(len(fields)):
        if fields[i] not in given and _normalized_field(out, fields[i], normalized[i], depth):
            return DECLINE
    return OK


cdef int _normalized_field(_Buffer out, str name, object value, int depth) except -1:
    _pack_str(out, name)
    if type(value) is _Buffer:
        return out.append(<_Buffer>value)
    return _pack(out, value, depth)


cdef inline Py_ssize_t _field(object key, tuple fields):
    """Index of a normalized field, -1 for a key kept as given."""
    if type(key) is not str:
        return -1
    cdef Py_ssize_t i
    for i in range(len(fields)):
        if <str>key == <str>fields[i]:
            return i
    return -1


cdef inline Py_ssize_t _missing(dict d, tuple fields):
    cdef Py_ssize_t n = 0
    for name in fields:
        if name not in d:
            n += 1
    return n


cdef int _sources(_Buffer out, _Buffer masks_out, list media, list sources, object frame_ts, content_type_of,
                  dict suffix_types) except -1:
    """The normalized ``sources`` list of a frame, or DECLINE."""
    cdef Py_ssize_t i
    cdef set ids = set()
    cdef dict s
    _array_header(out, len(sources))
    for i in range(len(sources)):
        item = _media(sources[i], i, None, frame_ts, content_type_of, suffix_types)
        if item is None:
            return DECLINE
        s = <dict>sources[i]
        width, height = s.get("width"), s.get("height")
        if (width is not None and (type(width) is not int or not 0 <= width < MAX_SIDE)) \
                or (height is not None and (type(height) is not int or not 0 <= height < MAX_SIDE)):
            return DECLINE
        given_masks = s.get("masks")
        if given_masks is None:
            given_masks = []
        elif type(given_masks) is not list or len(<list>given_masks) > len(MASK_IDS):
            return DECLINE
        if len(sources) > 1:
            ids.add((<tuple>item)[0])
        media.append(((<tuple>item)[0], None))
        masks_out.size = 0
        if _masks(masks_out, media, <list>given_masks, (<tuple>item)[3], content_type_of, suffix_types) \
                or _normalized_map(out, s, SOURCE_FIELDS, (<tuple>item)[:4] + (width, height, masks_out), 2):
            return DECLINE
    return OK if len(sources) < 2 or len(ids) == len(sources) else DECLINE


cdef int _masks(_Buffer out, list media, list masks, object source_ts, content_type_of,
                dict suffix_types) except -1:
    cdef Py_ssize_t i
    cdef set ids = set()
    _array_header(out, len(masks))
    for i in range(len(masks)):
        item = _media(masks[i], i, MASK_IDS, source_ts, content_type_of, suffix_types)
        if item is None or _values_total((<tuple>item)[4]) is None:  # no statistics: the decoder needs the Python way
            return DECLINE
        if len(masks) > 1:
            ids.add((<tuple>item)[0])
        media.append(((<tuple>item)[0], (<tuple>item)[4]))
        if _normalized_map(out, <dict>masks[i], MASK_FIELDS, <tuple>item, 3):
            return DECLINE
    return OK if len(masks) < 2 or len(ids) == len(masks) else DECLINE


cdef object _media(object item, Py_ssize_t index, tuple default_ids, object parent_ts, content_type_of,
                   dict suffix_types):
    """``(id, uri, content_type, timestamp)`` of a source or mask (``model._media_item``), plus its
    values for a mask; None declines. A missing id is ``default_ids[index]``, or ``str(index)``
    without a tuple."""
    if type(item) is not dict:
        return None
    cdef dict given = <dict>item
    uri = given.get("uri")
    if type(uri) is not str:
        return None
    item_id = given.get("id")
    if item_id is None:
        item_id = str(index) if default_ids is None else default_ids[index]
    elif type(item_id) is not str:
        return None
    content_type = given.get("content_type")
    if content_type is None or (type(content_type) is str and not content_type):
        content_type = _content_type(<str>uri, content_type_of, suffix_types)
    elif type(content_type) is not str:
        return None
    ts = given.get("timestamp")
    if ts is None:
        ts = parent_ts
    elif type(ts) is not int:
        return None
    return item_id, uri, content_type, ts, given.get("values")


cdef object _pixel_total(list media):
    """Mask pixels counted by the frame's statistics (``media`` as ``_sources`` fills it)."""
    total = 0
    for _, values in media:
        if values is not None:
            for v in <list>values:
                total += (<list>v)[3]
    return total


cdef object _values_total(object values):
    """Pixels counted by ``[[r, g, b, pixel_count], ...]`` (exact ints, channels in 0..255, counts >= 0),
    or None when ``values`` is not of that shape: what ingest writes and what readers accept."""
    if type(values) is not list:
        return None
    total = 0
    for v in <list>values:
        if type(v) is not list or len(<list>v) != 4:
            return None
        for c in (<list>v)[:3]:
            if type(c) is not int or not 0 <= c <= 255:
                return None
        count = (<list>v)[3]
        if type(count) is not int or count < 0:
            return None
        total += count
    return total


cdef object _content_type(str uri, content_type_of, dict suffix_types):
    if "://" in uri:
        return content_type_of(uri)
    cdef Py_ssize_t dot = uri.rfind(".")
    if dot < 0:
        return None
    suffix = uri[dot + 1:]
    if "/" in suffix:
        return None
    found = suffix_types.get(suffix, suffix_types)
    if found is suffix_types:
        found = content_type_of(uri)
        if len(suffix_types) < 4096:
            suffix_types[suffix] = found
    return found


cdef bint _meta_dict(dict meta, str path, list types, int depth):
    """``model._check_meta`` over a dict; with ``types`` a list, collects (dotted path, type name) of
    every non-null value, nested dicts walked. False declines."""
    if depth > MAX_DEPTH:
        return False
    for key, item in meta.items():
        if type(key) is not str or not key or "." in <str>key \
                or not ((<str>key).isascii() or _is_normalized("NFC", key)):  # model.nfc_keys owns the rest
            return False
        item_path = path + "." + key if path else key
        kind = type(item)
        if kind is str:
            name = "str"
        elif kind is bool:
            name = "bool"
        elif kind is int:
            name = "int"
        elif kind is float:
            if item != item:
                return False
            name = "float"
        elif item is None:
            continue
        elif kind is dict:
            if types is not None:
                types.append((item_path, "dict"))
            if not _meta_dict(<dict>item, item_path, types, depth + 1):
                return False
            continue
        elif kind is list:
            if types is not None:
                types.append((item_path, "list"))
            if not _meta_list(<list>item, depth + 1):
                return False
            continue
        else:
            return False
        if types is not None:
            types.append((item_path, name))
    return True


cdef bint _meta_list(list items, int depth):
    if depth > MAX_DEPTH:
        return False
    for item in items:
        kind = type(item)
        if item is None or kind is str or kind is bool or kind is int:
            continue
        if kind is float:
            if item != item:
                return False
        elif kind is list:
            if not _meta_list(<list>item, depth + 1):
                return False
        elif kind is dict:
            if not _meta_dict(<dict>item, "", None, depth + 1):
                return False
        else:
            return False
    return True


# ----------------------------------------------------------------------------- index keys

cdef class Postings:
    """Index entries of a batch, grouped by key: context id, source ids, mask ids, mask values
    (r, g, b bytes) and ROI labels, each key with the batch positions of the frames that have it.

    A key may come twice for one frame (a value in two masks); the index stores the pair once.
    Texts longer than ``max_key_text`` UTF-8 bytes are keyed by ``text_key``.
    """

    cdef dict context, value, source, mask, roi, text_keys
    cdef object text_key
    cdef Py_ssize_t max_key_text

    def __init__(self, text_key, Py_ssize_t max_key_text):
        self.context, self.value, self.source, self.mask, self.roi = {}, {}, {}, {}, {}
        self.text_keys = {}
        self.text_key = text_key
        self.max_key_text = max_key_text

    def add_record(self, Py_ssize_t pos, rec):
        """The keys of a normalized frame dict or a stored record."""
        _post(self.context, self._key(rec["context_id"]), pos)
        for s in rec["sources"]:
            _post(self.source, self._key(s["id"]), pos)
            for m in s["masks"]:
                _post(self.mask, self._key(m["id"]), pos)
                values = m.get("values")
                if values:
                    for v in values:
                        _post(self.value, _rgb(v), pos)
        for r in rec["rois"]:
            for label in r["label"]:
                _post(self.roi, self._key(label), pos)

    cdef add_keys(self, Py_ssize_t pos, object context, list media):
        """``add_record`` for a frame ``encode_common`` accepted: its context id, then per source
        ``(id, None)`` and per mask ``(id, values)``, as the encoder normalized them."""
        _post(self.context, self._key(context), pos)
        for media_id, values in media:
            if values is None:
                _post(self.source, self._key(media_id), pos)
            else:
                _post(self.mask, self._key(media_id), pos)
                for v in values:
                    _post(self.value, _rgb(v), pos)

    cdef object _key(self, object text):
        """``_text_bytes``, remembered: a batch repeats its source ids, mask ids and contexts."""
        if type(text) is not str:
            return self.text_key(text)
        found = self.text_keys.get(text)
        if found is None:
            found = self.text_keys[text] = self._text_bytes(text)
        return found

    cdef object _text_bytes(self, object text):
        if type(text) is str:
            raw = (<str>text).encode("utf-8")
            if len(<bytes>raw) <= self.max_key_text:
                return raw
        return self.text_key(text)

    def id_keys(self, bytes prefix, list texts):
        """``prefix`` + the key of each text (frame ids: unique, so not remembered)."""
        return [prefix + self._text_bytes(text) for text in texts]

    def groups(self):
        """``{index sub-database: {key: [batch positions]}}``: positions in the order frames came, one
        twice when a frame has a key twice (the writer makes them unique seqs, ``postings.from_groups``)."""
        cdef long code
        values = {}
        for code, positions in self.value.items():
            values[bytes((code >> 16, (code >> 8) & 255, code & 255))] = positions
        return {"ix_context": self.context, "ix_value": values, "ix_source": self.source,
                "ix_mask": self.mask, "ix_roi": self.roi}


cdef inline void _post(dict groups, object key, Py_ssize_t pos):
    found = groups.get(key)
    if found is None:
        groups[key] = [pos]
    else:
        (<list>found).append(pos)


cdef inline object _rgb(object v):
    """A mask value's channels as one int, 0xRRGGBB: cheaper to group by than three bytes."""
    cdef long r = v[0], g = v[1], b = v[2]
    if not (0 <= r <= 255 and 0 <= g <= 255 and 0 <= b <= 255):
        raise ValueError(f"mask value {v[:3]!r} has a channel outside 0..255")
    return (r << 16) | (g << 8) | b


# ------------------------------------------------------------------------------ reading records
# ``frame_ok`` is the shape every reader of a frame record relies on (the rules ingest applies,
# ``model.normalize_frame``): ``records.decode_frame`` refuses a record without it as damaged. Compiled
# because every frame a query streams passes through it.

def frame_ok(object body) -> bool:
    """Whether a decoded frame record has the shape readers rely on."""
    if type(body) is not dict:
        return False
    cdef dict d = <dict>body
    fid, context, ts = d.get("id"), d.get("context_id"), d.get("timestamp")
    rois, sources = d.get("rois"), d.get("sources")
    if type(fid) is not str or not fid or type(context) is not str or type(ts) is not int \
            or not -(2**63) <= ts < 2**63 or type(rois) is not list or type(sources) is not list:
        return False
    if not _meta_ok(d.get("meta")):
        return False
    for r in <list>rois:
        if not _roi_ok(r):
            return False
    total = 0
    for s in <list>sources:
        if not _source_ok(s):
            return False
        for m in <list>(<dict>s)["masks"]:
            counted = _mask_pixels(<dict>m)
            if counted is None:
                return False
            total += counted
    return _unique_ids(<list>sources) and total <= MAX_FRAME_PIXELS


cdef bint _unique_ids(list items):
    return len(items) < 2 or len({(<dict>item)["id"] for item in items}) == len(items)


cdef bint _media_ok(object item):
    """What sources and masks share: text id and URI, an integer timestamp or none."""
    if type(item) is not dict:
        return False
    ts = (<dict>item).get("timestamp")
    return (type((<dict>item).get("id")) is str and type((<dict>item).get("uri")) is str
            and (ts is None or type(ts) is int))


cdef bint _side_ok(object value):
    return value is None or (type(value) is int and 0 <= value < MAX_SIDE)


cdef bint _source_ok(object s):
    if not _media_ok(s):
        return False
    cdef dict d = <dict>s
    masks = d.get("masks")
    if not _side_ok(d.get("width")) or not _side_ok(d.get("height")) or type(masks) is not list:
        return False
    for m in <list>masks:
        if not _media_ok(m):
            return False
    return _unique_ids(<list>masks)


cdef object _mask_pixels(dict m):
    """Pixels a mask's statistics count, or None when ``values``, ``kind`` or ``coverage`` are not as
    ingest writes them (``[r, g, b, count]`` with channels in 0..255 and counts >= 0)."""
    values, kind, coverage = m.get("values"), m.get("kind"), m.get("coverage")
    if not (kind is None or kind == "alpha"):
        return None
    if coverage is not None and not (kind == "alpha" and type(coverage) is int and 0 <= coverage < 2**63):
        return None
    if values is None:
        return 0
    return _values_total(values)


cdef bint _number(object x):
    return type(x) is int or type(x) is float


cdef bint _roi_ok(object r):
    if type(r) is not dict:
        return False
    cdef dict d = <dict>r
    label, sources, confidence, poly, meta = d.get("label"), d.get("sources"), d.get("confidence"), \
        d.get("poly"), d.get("meta")
    if type(label) is not list or (sources is not None and type(sources) is not list) \
            or (confidence is not None and not _number(confidence)):
        return False
    for name in <list>label:
        if type(name) is not str:
            return False
    if poly:
        if type(poly) is not list or len(<list>poly) % 2:
            return False
        for x in <list>poly:
            if not _number(x):
                return False
    return not meta or _meta_ok(meta)


cdef bint _meta_ok(object meta):
    """Meta as ingest accepts it: a dict, keys non-empty text without '.', no NaN, nested dicts and
    lists (depth and value types are bounded by the unpacking already)."""
    if type(meta) is not dict:
        return False
    cdef list stack = [meta]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key, value in (<dict>node).items():
                if not key or "." in key:
                    return False
                if type(value) is float and value != value:
                    return False
                if type(value) is dict or type(value) is list:
                    stack.append(value)
        else:
            for value in <list>node:
                if type(value) is float and value != value:
                    return False
                if type(value) is dict or type(value) is list:
                    stack.append(value)
    return True


# ------------------------------------------------------------------------------ scan column rows
# ``chunk_rows`` reads frame records as bytes, the way ``records.encode_frames`` wrote them: a write
# builds the scan columns of the frames it just encoded without decoding them again. It is
# ``_fallback.chunk_rows`` read off the msgpack: what a dict would keep of a map with a key twice,
# or anything else a writer does not produce, it leaves to that twin for the whole chunk.

from ._fallback import chunk_rows as _python_chunk_rows

import numpy as np

cdef enum:
    M_NIL, M_BOOL, M_INT, M_UINT, M_FLOAT32, M_FLOAT64, M_STR, M_BIN, M_ARRAY, M_MAP, M_EXT

cdef enum:  # value kinds of a meta path, as bits
    K_STR = 1
    K_BOOL = 2
    K_INT = 4
    K_FLOAT = 8
    K_DICT = 16
    K_LIST = 32

_KIND_BITS = ((K_STR, "str"), (K_BOOL, "bool"), (K_INT, "int"), (K_FLOAT, "float"), (K_DICT, "dict"),
              (K_LIST, "list"))
_KIND_SETS = {}  # bits -> frozenset of kind names


class _Declined(Exception):
    """A record the compiled reader leaves to the Python twin."""


cdef struct _Reader:
    const unsigned char* p
    const unsigned char* end


cdef struct _Item:  # one msgpack header: its kind, and its length (str, bin, array, map, ext) or value
    int kind
    unsigned long long n


cdef inline unsigned long long _be(const unsigned char* p, int nbytes):
    cdef unsigned long long v = 0
    cdef int i
    for i in range(nbytes):
        v = (v << 8) | p[i]
    return v


cdef int _take(_Reader* r, Py_ssize_t n) except -1:
    if r.end - r.p < n:
        raise ValueError("a frame record ends inside a value")
    return 0


cdef int _header(_Reader* r, _Item* item) except -1:
    """Reads one msgpack header; a str, bin or ext's bytes follow at ``r.p``."""
    _take(r, 1)
    cdef unsigned char b = r.p[0]
    cdef int extra = 0
    r.p += 1
    if b <= 0x7f:
        item.kind, item.n = M_UINT, b
    elif b >= 0xe0:
        item.kind, item.n = M_INT, <unsigned long long><long long>(<signed char>b)
    elif b <= 0x8f:
        item.kind, item.n = M_MAP, b & 0x0f
    elif b <= 0x9f:
        item.kind, item.n = M_ARRAY, b & 0x0f
    elif b <= 0xbf:
        item.kind, item.n = M_STR, b & 0x1f
    elif b == 0xc0:
        item.kind, item.n = M_NIL, 0
    elif b == 0xc2 or b == 0xc3:
        item.kind, item.n = M_BOOL, b - 0xc2
    elif 0xcc <= b <= 0xcf:
        extra = 1 << (b - 0xcc)
        _take(r, extra)
        item.kind, item.n = M_UINT, _be(r.p, extra)
    elif 0xd0 <= b <= 0xd3:
        extra = 1 << (b - 0xd0)
        _take(r, extra)
        item.kind, item.n = M_INT, _be(r.p, extra)
        if extra < 8 and item.n >> (8 * extra - 1):  # negative: sign-extend
            item.n |= ~((1ULL << (8 * extra)) - 1)
    elif b == 0xca or b == 0xcb:
        extra = 4 if b == 0xca else 8
        _take(r, extra)
        item.kind, item.n = (M_FLOAT32 if b == 0xca else M_FLOAT64), _be(r.p, extra)
    elif 0xd9 <= b <= 0xdb:
        extra = 1 << (b - 0xd9)
        _take(r, extra)
        item.kind, item.n = M_STR, _be(r.p, extra)
    elif 0xc4 <= b <= 0xc6:
        extra = 1 << (b - 0xc4)
        _take(r, extra)
        item.kind, item.n = M_BIN, _be(r.p, extra)
    elif b == 0xdc or b == 0xdd:
        extra = 2 if b == 0xdc else 4
        _take(r, extra)
        item.kind, item.n = M_ARRAY, _be(r.p, extra)
    elif b == 0xde or b == 0xdf:
        extra = 2 if b == 0xde else 4
        _take(r, extra)
        item.kind, item.n = M_MAP, _be(r.p, extra)
    elif 0xd4 <= b <= 0xd8:
        _take(r, 1)
        item.kind, item.n = M_EXT, 1 << (b - 0xd4)
        extra = 1  # the ext type byte
    elif 0xc7 <= b <= 0xc9:
        extra = 1 << (b - 0xc7)
        _take(r, extra + 1)
        item.kind, item.n = M_EXT, _be(r.p, extra)
        extra += 1
    else:  # 0xc1: never used
        raise ValueError("a frame record holds the unused msgpack byte 0xc1")
    r.p += extra
    if item.kind == M_STR or item.kind == M_BIN or item.kind == M_EXT:
        _take(r, <Py_ssize_t>item.n)
    return 0


cdef int _skip(_Reader* r) except -1:
    """Steps over one value, however nested (no recursion)."""
    cdef _Item item
    cdef unsigned long long pending = 1
    while pending:
        pending -= 1
        _header(r, &item)
        if item.kind == M_STR or item.kind == M_BIN or item.kind == M_EXT:
            r.p += item.n
        elif item.kind == M_ARRAY:
            pending += item.n
        elif item.kind == M_MAP:
            pending += 2 * item.n
    return 0


cdef inline bint _is(const unsigned char* p, unsigned long long n, const char* name):
    return n == strlen(name) and memcmp(p, name, n) == 0


cdef str _text(_Reader* r):
    cdef _Item item
    _header(r, &item)
    if item.kind != M_STR:
        raise _Declined()
    text = PyUnicode_DecodeUTF8(<const char*>r.p, item.n, NULL)
    r.p += item.n
    return text


cdef long long _int(_Reader* r) except? -1:
    """An integer that fits int64; anything else declines."""
    cdef _Item item
    _header(r, &item)
    if item.kind == M_INT or (item.kind == M_UINT and item.n < (1ULL << 63)):
        return <long long>item.n
    raise _Declined()


cdef object _scalar(_Reader* r, _Item* item):
    """The Python value of a scalar whose header was read."""
    cdef float f
    cdef double d
    cdef unsigned int bits32
    if item.kind == M_STR:
        text = PyUnicode_DecodeUTF8(<const char*>r.p, item.n, NULL)
        r.p += item.n
        return text
    if item.kind == M_INT:
        return <long long>item.n
    if item.kind == M_UINT:
        return item.n
    if item.kind == M_BOOL:
        return item.n == 1
    if item.kind == M_FLOAT64:
        memcpy(&d, &item.n, 8)
        return d
    if item.kind == M_FLOAT32:
        bits32 = <unsigned int>item.n
        memcpy(&f, &bits32, 4)
        return <double>f
    raise _Declined()  # bin, ext: not in a frame record


cdef enum:
    _TOP_KEYS = 16  # top-level meta keys remembered from the previous row; maps up to this size checked pairwise


cdef class _RowWriter:
    """The columns of one chunk as rows are read: numpy arrays by row, value keys and counts as raw
    bytes, texts dictionary-coded, meta per path as [kind bits, rows, values]."""
    cdef Py_ssize_t base, size
    cdef object present_arr, timestamp_arr, n_masks_arr, n_rois_arr, offsets_arr, id_codes_arr, ctx_codes_arr
    cdef unsigned char[:] present
    cdef long long[:] timestamp, offsets
    cdef int[:] n_masks, n_rois, id_codes, ctx_codes
    cdef dict id_index, ctx_index, meta
    cdef _Buffer keys, counts
    # the current frame's distinct values, in order of first appearance
    cdef unsigned int* frame_keys
    cdef long long* frame_counts
    cdef Py_ssize_t n_frame, frame_capacity
    cdef dict frame_slots  # key -> slot, once a frame has many values
    # What the previous row had (pointers into its record, which the caller keeps alive): consecutive
    # frames mostly share a context id and the same top-level meta keys, so those cost no new str.
    cdef const unsigned char* last_context
    cdef unsigned long long last_context_len
    cdef int last_context_code
    cdef const unsigned char* top_key[_TOP_KEYS]
    cdef unsigned long long top_key_len[_TOP_KEYS]
    cdef list top_column  # the _MetaColumn of each remembered key

    def __cinit__(self, Py_ssize_t base, Py_ssize_t size):
        cdef int k
        self.base, self.size = base, size
        self.present_arr = np.zeros(size, np.uint8)
        self.timestamp_arr = np.zeros(size, np.int64)
        self.n_masks_arr = np.zeros(size, np.int32)
        self.n_rois_arr = np.zeros(size, np.int32)
        self.offsets_arr = np.zeros(size + 1, np.int64)
        self.id_codes_arr = np.full(size, -1, np.int32)
        self.ctx_codes_arr = np.full(size, -1, np.int32)
        self.present, self.timestamp, self.offsets = self.present_arr, self.timestamp_arr, self.offsets_arr
        self.n_masks, self.n_rois = self.n_masks_arr, self.n_rois_arr
        self.id_codes, self.ctx_codes = self.id_codes_arr, self.ctx_codes_arr
        self.id_index, self.ctx_index, self.meta = {}, {}, {}
        self.keys, self.counts = _Buffer(), _Buffer()
        self.frame_capacity = 64
        self.frame_keys = <unsigned int*>malloc(self.frame_capacity * sizeof(unsigned int))
        self.frame_counts = <long long*>malloc(self.frame_capacity * sizeof(long long))
        if self.frame_keys == NULL or self.frame_counts == NULL:
            raise MemoryError()
        self.last_context = NULL
        self.top_column = [None] * _TOP_KEYS
        for k in range(_TOP_KEYS):
            self.top_key[k] = NULL

    def __dealloc__(self):
        free(self.frame_keys)
        free(self.frame_counts)

    cdef int row(self, Py_ssize_t i, const unsigned char* data, Py_ssize_t n) except -1:
        """One frame record's fields into row ``i``; a key given twice declines."""
        cdef _Reader r
        cdef _Item item
        cdef unsigned long long k, k2
        cdef int seen = 0, bit
        cdef const unsigned char* name
        cdef unsigned long long length
        r.p, r.end = data, data + n
        _header(&r, &item)
        if item.kind != M_MAP:
            raise _Declined()
        self.n_frame = 0
        self.frame_slots = None
        for k in range(item.n):
            _header(&r, &item)
            if item.kind != M_STR:
                raise _Declined()
            name, length = r.p, item.n
            r.p += length
            if _is(name, length, b"id"):
                bit = 1
                _code(self.id_index, self.id_codes, i, _text(&r))
            elif _is(name, length, b"context_id"):
                bit = 2
                self.context(&r, i)
            elif _is(name, length, b"timestamp"):
                bit = 4
                self.timestamp[i] = _int(&r)
            elif _is(name, length, b"rois"):
                bit = 8
                _header(&r, &item)
                if item.kind != M_ARRAY:
                    raise _Declined()
                self.n_rois[i] = <int>item.n
                for k2 in range(item.n):
                    _skip(&r)
            elif _is(name, length, b"sources"):
                bit = 16
                self.sources(&r, i)
            elif _is(name, length, b"meta"):
                bit = 32
                _header(&r, &item)
                if item.kind != M_MAP:
                    raise _Declined()
                self.meta_map(&r, item.n, "", i, 0)
            else:
                bit = 0
                _skip(&r)
            if seen & bit:
                raise _Declined()
            seen |= bit
        if r.p != r.end or seen != 63:
            raise _Declined()
        self.present[i] = 1
        self.keys.raw(<const char*>self.frame_keys, self.n_frame * sizeof(unsigned int))
        self.counts.raw(<const char*>self.frame_counts, self.n_frame * sizeof(long long))
        self.offsets[i + 1] = self.n_frame  # sizes for now; summed in ``result``
        return 0

    cdef int context(self, _Reader* r, Py_ssize_t i) except -1:
        cdef _Item item
        _header(r, &item)
        if item.kind != M_STR:
            raise _Declined()
        if self.last_context == NULL or self.last_context_len != item.n \
                or memcmp(self.last_context, r.p, item.n) != 0:
            _code(self.ctx_index, self.ctx_codes, i, PyUnicode_DecodeUTF8(<const char*>r.p, item.n, NULL))
            self.last_context, self.last_context_len, self.last_context_code = r.p, item.n, self.ctx_codes[i]
        else:
            self.ctx_codes[i] = self.last_context_code
        r.p += item.n
        return 0

    cdef int sources(self, _Reader* r, Py_ssize_t i) except -1:
        cdef _Item item, mask_item
        cdef unsigned long long s, k, m
        cdef int masks_seen
        cdef const unsigned char* name
        cdef unsigned long long length
        _header(r, &item)
        if item.kind != M_ARRAY:
            raise _Declined()
        for s in range(item.n):
            _header(r, &item)
            if item.kind != M_MAP:
                raise _Declined()
            masks_seen = 0
            for k in range(item.n):
                _header(r, &mask_item)
                if mask_item.kind != M_STR:
                    raise _Declined()
                name, length = r.p, mask_item.n
                r.p += length
                if not _is(name, length, b"masks"):
                    _skip(r)
                    continue
                if masks_seen:
                    raise _Declined()
                masks_seen = 1
                _header(r, &mask_item)
                if mask_item.kind != M_ARRAY:
                    raise _Declined()
                self.n_masks[i] += <int>mask_item.n
                for m in range(mask_item.n):
                    self.mask(r)
            if not masks_seen:
                raise _Declined()
        return 0

    cdef int mask(self, _Reader* r) except -1:
        cdef _Item item
        cdef unsigned long long k, v, count
        cdef long long c[4]
        cdef int values_seen = 0, j
        cdef const unsigned char* name
        cdef unsigned long long length
        _header(r, &item)
        if item.kind != M_MAP:
            raise _Declined()
        for k in range(item.n):
            _header(r, &item)
            if item.kind != M_STR:
                raise _Declined()
            name, length = r.p, item.n
            r.p += length
            if not _is(name, length, b"values"):
                _skip(r)
                continue
            if values_seen:
                raise _Declined()
            values_seen = 1
            _header(r, &item)
            if item.kind == M_NIL:
                continue
            if item.kind != M_ARRAY:
                raise _Declined()
            count = item.n
            for v in range(count):
                _header(r, &item)
                if item.kind != M_ARRAY or item.n != 4:
                    raise _Declined()
                for j in range(4):
                    c[j] = _int(r)
                self.add_value(<unsigned int>((c[0] << 16) | (c[1] << 8) | c[2]), c[3])
        return 0

    cdef int add_value(self, unsigned int key, long long count) except -1:
        """Sums a mask value into the frame's totals (a dict's order: first appearance)."""
        cdef Py_ssize_t j
        if self.frame_slots is None:
            for j in range(self.n_frame):
                if self.frame_keys[j] == key:
                    self.frame_counts[j] += count
                    return 0
            if self.n_frame == 64:  # many values: find them by dict from here on
                self.frame_slots = {self.frame_keys[j]: j for j in range(self.n_frame)}
        else:
            found = self.frame_slots.get(key)
            if found is not None:
                self.frame_counts[<Py_ssize_t>found] += count
                return 0
            self.frame_slots[key] = self.n_frame
        if self.n_frame == self.frame_capacity:
            self.grow()
        self.frame_keys[self.n_frame] = key
        self.frame_counts[self.n_frame] = count
        self.n_frame += 1
        return 0

    cdef int grow(self) except -1:
        cdef Py_ssize_t capacity = 2 * self.frame_capacity
        cdef unsigned int* grown_keys = <unsigned int*>realloc(self.frame_keys, capacity * sizeof(unsigned int))
        if grown_keys == NULL:
            raise MemoryError()
        self.frame_keys = grown_keys
        cdef long long* grown_counts = <long long*>realloc(self.frame_counts, capacity * sizeof(long long))
        if grown_counts == NULL:
            raise MemoryError()
        self.frame_counts = grown_counts
        self.frame_capacity = capacity
        return 0

    cdef int meta_map(self, _Reader* r, unsigned long long n, str prefix, Py_ssize_t i, int depth) except -1:
        """A meta map of ``n`` entries: each non-null value under its dotted path, nested maps walked."""
        cdef _Item item
        cdef unsigned long long k, k2, length
        cdef int bit
        cdef const unsigned char* name
        cdef const unsigned char* names[_TOP_KEYS]
        cdef unsigned long long name_lens[_TOP_KEYS]
        cdef set many = set() if n > _TOP_KEYS else None
        cdef bint top = depth == 0
        if depth > MAX_DEPTH:
            raise _Declined()
        for k in range(n):
            _header(r, &item)
            if item.kind != M_STR:
                raise _Declined()
            name, length = r.p, item.n
            r.p += length
            # A key given twice: a dict keeps the last value at the first one's place; decoding says.
            if many is None:
                for k2 in range(k):
                    if name_lens[k2] == length and memcmp(names[k2], name, length) == 0:
                        raise _Declined()
                names[k], name_lens[k] = name, length
            else:
                key = PyBytes_FromStringAndSize(<const char*>name, length)
                if key in many:
                    raise _Declined()
                many.add(key)
            if top and k < _TOP_KEYS and self.top_key[k] != NULL and self.top_key_len[k] == length \
                    and memcmp(self.top_key[k], name, length) == 0:
                column = <_MetaColumn>self.top_column[k]
            else:
                path = PyUnicode_DecodeUTF8(<const char*>name, length, NULL)
                if prefix:
                    path = prefix + "." + path
                column = self.meta.get(path)
                if column is None:
                    column = self.meta[path] = _MetaColumn(path)
                if top and k < _TOP_KEYS:
                    self.top_key[k], self.top_key_len[k], self.top_column[k] = name, length, column
            _header(r, &item)
            if item.kind == M_NIL:
                continue
            if item.kind == M_MAP:
                (<_MetaColumn>column).add(i, K_DICT, None)
                self.meta_map(r, item.n, (<_MetaColumn>column).path, i, depth + 1)
            elif item.kind == M_ARRAY:
                (<_MetaColumn>column).add(i, K_LIST, None)
                for k2 in range(item.n):
                    _skip(r)
            else:
                bit = K_STR if item.kind == M_STR else K_BOOL if item.kind == M_BOOL \
                    else K_FLOAT if item.kind == M_FLOAT32 or item.kind == M_FLOAT64 else K_INT
                (<_MetaColumn>column).add(i, bit, _scalar(r, &item))
        return 0

    def result(self):
        offsets = self.offsets_arr
        np.cumsum(offsets, out=offsets)
        cdef _MetaColumn column
        meta = {}
        for path, column in self.meta.items():
            if not column.bits:
                continue  # only nulls
            kinds = _KIND_SETS.get(column.bits)
            if kinds is None:
                kinds = _KIND_SETS[column.bits] = frozenset(name for bit, name in _KIND_BITS if column.bits & bit)
            meta[path] = (kinds, np.frombuffer(column.rows.take(), np.int64), column.values)
        return (self.present_arr.view(np.bool_), self.timestamp_arr, (list(self.id_index), self.id_codes_arr),
                (list(self.ctx_index), self.ctx_codes_arr), self.n_masks_arr, self.n_rois_arr, offsets,
                np.frombuffer(self.keys.take(), np.uint32), np.frombuffer(self.counts.take(), np.int64), meta)


cdef class _MetaColumn:
    """One meta path's values as rows are read: kind bits, rows (int64 bytes) and values."""
    cdef int bits
    cdef _Buffer rows
    cdef list values
    cdef str path

    def __cinit__(self, str path):
        self.bits = 0
        self.rows = _Buffer(256)
        self.values = []
        self.path = path

    cdef inline int add(self, long long i, int bit, object value) except -1:
        self.bits |= bit
        self.rows.raw(<const char*>&i, sizeof(long long))
        self.values.append(value)
        return 0


cdef inline int _code(dict index, int[:] codes, Py_ssize_t i, str text) except -1:
    found = index.get(text)
    if found is None:
        found = index[text] = len(index)
    codes[i] = <int>found
    return 0


def chunk_rows(Py_ssize_t base, Py_ssize_t size, list rows):
    """``_fallback.chunk_rows``, read straight off the record bytes."""
    cdef _RowWriter out = _RowWriter(base, size)
    cdef Py_ssize_t i, last = -1
    cdef list kept = []  # every record stays alive until the end: the writer points into the last one
    try:
        for seq, record in rows:
            if type(record) is not bytes:
                record = bytes(record)
            kept.append(record)
            i = <Py_ssize_t>seq - base
            if len(<bytes>record) < 2 or not last < i < size:
                raise ValueError(f"frame seq {seq} is not the next record of the chunk at {base}")
            last = i
            out.row(i, <const unsigned char*>PyBytes_AS_STRING(record) + 2, len(<bytes>record) - 2)
    except _Declined:
        return _python_chunk_rows(base, size, rows)
    return out.result()
