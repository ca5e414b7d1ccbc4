"""Hypothesis strategies shared by the round-trip tests: frame dicts and their parts."""

from __future__ import annotations

from hypothesis import strategies as st

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False), names)
meta_keys = names.filter(lambda k: "." not in k)
metas = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                     st.dictionaries(meta_keys, kids, max_size=3)), max_leaves=8)
values = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                            st.integers(0, 2**40)).map(list), max_size=5)
masks = st.builds(lambda uri, mid, vals: {"id": mid, "uri": uri, "values": vals}, names, names, values)
sources = st.builds(lambda uri, ms, w: {"uri": uri, "width": w, "height": w, "masks": ms},
                    names, st.lists(masks, max_size=3, unique_by=lambda m: m["id"]), st.none() | st.integers(1, 9999))
rois = st.builds(lambda label, conf, poly: {"label": label, "confidence": conf, "poly": poly},
                 st.lists(names, max_size=3), st.none() | st.floats(0, 1), st.lists(st.integers(0, 99), max_size=4)
                 .filter(lambda p: len(p) % 2 == 0))
frame_dicts = st.builds(
    lambda fid, ts, ctx, meta, srcs, rs: {"id": fid, "timestamp": ts, "context_id": ctx, "meta": meta,
                                          "sources": [dict(s, id=str(i)) for i, s in enumerate(srcs)], "rois": rs},
    names, st.integers(-2**62, 2**62), names, st.dictionaries(meta_keys, metas, max_size=4),
    st.lists(sources, max_size=3), st.lists(rois, max_size=3))


