# cython: language_level=3, boundscheck=False, wraparound=False
"""The two per-frame loops of bulk ingest, compiled: Python's per-object cost, not LMDB, bounded it.

``normalize_common`` is ``model.normalize_frame`` for the shape nearly every frame has (plain dicts,
exact types, a given id, no ROIs). Any other frame, valid or not, it declines with ``None``, and
``model.normalize_frames`` hands that one to ``normalize_frame``, which also writes every error
message. So the rules live in Python; this is a faster copy of their common case, and
``tests/test_speedups.py`` checks with hypothesis that both give equal dicts, key order included.

``index_postings`` is the one definition of a record's index keys, for writes, deletes, ``check``
and repair alike.
"""

MAX_META_DEPTH = 100  # deeper meta goes the Python way (and meets its recursion limit there)
MASK_IDS = tuple(f"{i:02d}" for i in range(100))


# ----------------------------------------------------------------------------- normalize

def normalize_common(list frames, content_type_of, dict suffix_types):
    """``(normalized dict, meta types)`` per frame, or ``None`` for a frame outside the common shape.

    ``content_type_of(uri)`` guesses a missing content type; ``suffix_types`` caches its answers per
    file suffix for URIs without a scheme, whose answer depends on the suffix alone.
    """
    cdef list out = []
    for f in frames:
        out.append(_frame(f, content_type_of, suffix_types) if type(f) is dict else None)
    return out


cdef object _frame(dict d, content_type_of, dict suffix_types):
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
    if not _meta_dict(<dict>meta, "", types, 0):
        return None

    cdef dict out = dict(d)
    out["id"] = frame_id
    out["timestamp"] = ts
    cdef list normal_sources = []
    cdef Py_ssize_t i
    for i in range(len(sources)):
        source = _source(sources[i], str(i), ts, content_type_of, suffix_types)
        if source is None:
            return None
        normal_sources.append(source)
    if len(normal_sources) > 1 and not _unique_ids(normal_sources):
        return None
    out["sources"] = normal_sources
    context = d.get("context_id")
    if context is None:
        context = (<dict>normal_sources[0])["uri"] if normal_sources else frame_id
    elif type(context) is not str:
        return None
    out["context_id"] = context
    out["meta"] = dict(meta)
    out["rois"] = []
    return out, types


cdef object _media(object item, object default_id, object parent_ts, content_type_of, dict suffix_types):
    """What sources and masks share (``model._media_item``); ``None`` declines."""
    if type(item) is not dict:
        return None
    cdef dict given = <dict>item
    uri = given.get("uri")
    if type(uri) is not str:
        return None
    item_id = given.get("id")
    if item_id is None:
        item_id = default_id
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
    cdef dict out = dict(given)
    out["id"] = item_id
    out["uri"] = uri
    out["content_type"] = content_type
    out["timestamp"] = ts
    return out


cdef object _source(object s, str default_id, object frame_ts, content_type_of, dict suffix_types):
    out = _media(s, default_id, frame_ts, content_type_of, suffix_types)
    if out is None:
        return None
    cdef dict source = <dict>out
    width = source.get("width")
    height = source.get("height")
    if (width is not None and type(width) is not int) or (height is not None and type(height) is not int):
        return None
    source["width"] = width
    source["height"] = height
    given_masks = source.get("masks")
    if given_masks is None:
        given_masks = []
    elif type(given_masks) is not list:
        return None
    cdef list masks = []
    cdef Py_ssize_t i
    ts = source["timestamp"]
    for i in range(len(<list>given_masks)):
        if i >= len(MASK_IDS):
            return None
        mask = _media((<list>given_masks)[i], MASK_IDS[i], ts, content_type_of, suffix_types)
        if mask is None:
            return None
        values = (<dict>mask).get("values")
        if values is not None:
            values = _values(values)
            if values is None:
                return None
            (<dict>mask)["values"] = values
        masks.append(mask)
    if len(masks) > 1 and not _unique_ids(masks):
        return None
    source["masks"] = masks
    return source


cdef object _values(object values):
    """A copy of a ``[[r, g, b, pixel_count], ...]`` list whose entries are exact ints in range."""
    if type(values) is not list:
        return None
    for v in <list>values:
        if type(v) is not list or len(<list>v) != 4:
            return None
        for c in (<list>v)[:3]:
            if type(c) is not int or not 0 <= c <= 255:
                return None
        count = (<list>v)[3]
        if type(count) is not int or count < 0:
            return None
    return list(<list>values)


cdef bint _unique_ids(list items):
    cdef set seen = set()
    for item in items:
        seen.add((<dict>item)["id"])
    return len(seen) == len(items)


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
    if depth > MAX_META_DEPTH:
        return False
    for key, item in meta.items():
        if type(key) is not str or not key or "." in <str>key:
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
    if depth > MAX_META_DEPTH:
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

def index_postings(list records, list seqs, bytes prefix, text_key, Py_ssize_t max_key_text):
    """``{index sub-database: [(prefix + key, seq), ...]}`` of frame records, each list sorted by key,
    a key's seqs in record order.

    Keys: context id, source ids, mask ids, mask values (r, g, b bytes) and ROI labels. A key may
    come twice for one record (a value in two masks); a dupsort database stores the pair once.
    Texts longer than ``max_key_text`` UTF-8 bytes are keyed by ``text_key``.
    """
    cdef dict context = {}, value = {}, source = {}, mask = {}, roi = {}
    cdef dict text_keys = {}  # a batch repeats its source ids, mask ids and contexts
    cdef Py_ssize_t i
    for i in range(len(records)):
        rec = records[i]
        seq = seqs[i]
        _post(context, _text_key(rec["context_id"], text_keys, text_key, max_key_text), seq)
        for s in rec["sources"]:
            _post(source, _text_key(s["id"], text_keys, text_key, max_key_text), seq)
            for m in s["masks"]:
                _post(mask, _text_key(m["id"], text_keys, text_key, max_key_text), seq)
                values = m.get("values")
                if values:
                    for v in values:
                        _post(value, _rgb(v), seq)
        for r in rec["rois"]:
            for label in r["label"]:
                _post(roi, _text_key(label, text_keys, text_key, max_key_text), seq)
    return {"ix_context": _items(context, prefix), "ix_value": _items(value, prefix, rgb=True),
            "ix_source": _items(source, prefix), "ix_mask": _items(mask, prefix), "ix_roi": _items(roi, prefix)}


cdef inline void _post(dict groups, object key, object seq):
    found = groups.get(key)
    if found is None:
        groups[key] = [seq]
    else:
        (<list>found).append(seq)


cdef inline object _rgb(object v):
    """A mask value's channels as one int, 0xRRGGBB: cheaper to group by than three bytes."""
    cdef long r = v[0], g = v[1], b = v[2]
    if not (0 <= r <= 255 and 0 <= g <= 255 and 0 <= b <= 255):
        raise ValueError(f"mask value {v[:3]!r} has a channel outside 0..255")
    return (r << 16) | (g << 8) | b


cdef object _text_key(object text, dict text_keys, text_key, Py_ssize_t max_key_text):
    if type(text) is not str:
        return text_key(text)
    found = text_keys.get(text)
    if found is None:
        found = (<str>text).encode("utf-8")
        if len(<bytes>found) > max_key_text:
            found = text_key(text)
        text_keys[text] = found
    return found


cdef list _items(dict groups, bytes prefix, bint rgb=False):
    cdef list out = []
    cdef long code
    for key in sorted(groups):
        if rgb:
            code = key
            full_key = prefix + bytes((code >> 16, (code >> 8) & 255, code & 255))
        else:
            full_key = prefix + key
        for seq in <list>groups[key]:
            out.append((full_key, seq))
    return out
