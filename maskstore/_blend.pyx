# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The renderer's blends, compiled: each maps a mask value to its row and blends in one pass.

``maskstore.render`` builds every table (which row a mask value takes, the blend table
``lut[channel, row, src]`` of spec section 6); these loops only walk the pixels, so the numpy path
stays the reference and ``tests/test_blend.py`` checks with hypothesis that both give the same
bytes. No loop allocates or holds the GIL: threads rendering different frames run in parallel.

``image_pixels`` reads a decoded Pillow image in place (through the Arrow C data interface Pillow
exports), so a source or an RGB mask reaches the loops without a copy or a packing pass.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

import numpy as np


cdef extern from *:
    """
    /* The Arrow C data interface (arrow.apache.org/docs/format/CDataInterface.html): an ABI, stable by design. */
    struct ArrowSchema {
        const char* format; const char* name; const char* metadata; int64_t flags; int64_t n_children;
        struct ArrowSchema** children; struct ArrowSchema* dictionary;
        void (*release)(struct ArrowSchema*); void* private_data;
    };
    struct ArrowArray {
        int64_t length; int64_t null_count; int64_t offset; int64_t n_buffers; int64_t n_children;
        const void** buffers; struct ArrowArray** children; struct ArrowArray* dictionary;
        void (*release)(struct ArrowArray*); void* private_data;
    };

    /* Four bytes as one little-endian word: one load or store instead of four (memcpy compiles to a
       single move). Stores are the blend loops' bottleneck. */
    static inline uint32_t maskstore_load_le32(const uint8_t* p) {
        uint32_t v; memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    static inline void maskstore_store_le32(uint8_t* p, uint32_t v) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        memcpy(p, &v, 4);
    }

    /* Four 4-byte source pixels at a time: (s * weight + term) // 255 per channel in 16-bit lanes,
       with x // 255 == (x + 1 + (x >> 8)) >> 8 (exact for x <= 65279; the blends stay below
       255 * 255 + 127). Writes 14 bytes at o, the last two belong to the next pixel and are written
       after it. Elsewhere the single-pixel path does everything. */
    #if defined(__x86_64__) || defined(_M_X64)
    #include <emmintrin.h>
    #define MASKSTORE_LANES 1
    static inline void maskstore_blend4_wt(const uint8_t* s, __m128i w_lo, __m128i t_lo, __m128i w_hi,
                                           __m128i t_hi, uint8_t* o) {
        const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi16(1);
        __m128i v = _mm_loadu_si128((const __m128i*)s);
        __m128i lo = _mm_add_epi16(_mm_mullo_epi16(_mm_unpacklo_epi8(v, zero), w_lo), t_lo);
        __m128i hi = _mm_add_epi16(_mm_mullo_epi16(_mm_unpackhi_epi8(v, zero), w_hi), t_hi);
        lo = _mm_srli_epi16(_mm_add_epi16(_mm_add_epi16(lo, one), _mm_srli_epi16(lo, 8)), 8);
        hi = _mm_srli_epi16(_mm_add_epi16(_mm_add_epi16(hi, one), _mm_srli_epi16(hi, 8)), 8);
        __m128i packed = _mm_packus_epi16(lo, hi);
        uint64_t a = (uint64_t)_mm_cvtsi128_si64(packed);
        uint64_t b = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(packed, packed));
        a = (a & 0xFFFFFFull) | ((a >> 8) & 0xFFFFFF000000ull);
        b = (b & 0xFFFFFFull) | ((b >> 8) & 0xFFFFFF000000ull);
        memcpy(o, &a, 8);
        memcpy(o + 6, &b, 8);
    }
    /* Four pixels of one row: its lanes hold the weight eight times and the terms twice. */
    static inline void maskstore_blend4(const uint8_t* s, const uint16_t* lanes, uint8_t* o) {
        const __m128i w = _mm_loadu_si128((const __m128i*)lanes), t = _mm_loadu_si128((const __m128i*)(lanes + 8));
        maskstore_blend4_wt(s, w, t, w, t, o);
    }
    /* Four pixels of rows a, b, c, d (pointers to their lanes): each row's first four weights and terms. */
    static inline __m128i maskstore_pair(const uint16_t* a, const uint16_t* b) {
        return _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i*)a), _mm_loadl_epi64((const __m128i*)b));
    }
    static inline void maskstore_blend4_rows(const uint8_t* s, const uint16_t* a, const uint16_t* b,
                                             const uint16_t* c, const uint16_t* d, uint8_t* o) {
        maskstore_blend4_wt(s, maskstore_pair(a, b), maskstore_pair(a + 8, b + 8), maskstore_pair(c, d),
                            maskstore_pair(c + 8, d + 8), o);
    }
    /* Whether the four 4-byte mask pixels at m have one r, g, b (the fourth byte is alpha or padding). */
    static inline int maskstore_same4(const uint8_t* m) {
        __m128i v = _mm_and_si128(_mm_loadu_si128((const __m128i*)m), _mm_set1_epi32(0x00FFFFFF));
        return _mm_movemask_epi8(_mm_cmpeq_epi32(v, _mm_shuffle_epi32(v, 0))) == 0xFFFF;
    }
    #else
    #define MASKSTORE_LANES 0
    static inline void maskstore_blend4(const uint8_t* s, const uint16_t* lanes, uint8_t* o) {}
    static inline void maskstore_blend4_rows(const uint8_t* s, const uint16_t* a, const uint16_t* b,
                                             const uint16_t* c, const uint16_t* d, uint8_t* o) {}
    static inline int maskstore_same4(const uint8_t* m) { return 0; }
    #endif
    """
    bint LANES "MASKSTORE_LANES"
    void blend4 "maskstore_blend4"(const uint8_t* s, const uint16_t* lanes, uint8_t* o) noexcept nogil
    void blend4_rows "maskstore_blend4_rows"(const uint8_t* s, const uint16_t* a, const uint16_t* b,
                                             const uint16_t* c, const uint16_t* d, uint8_t* o) noexcept nogil
    bint same4 "maskstore_same4"(const uint8_t* m) noexcept nogil
    uint32_t load_le32 "maskstore_load_le32"(const uint8_t* p) noexcept nogil
    void store_le32 "maskstore_store_le32"(uint8_t* p, uint32_t v) noexcept nogil
    struct ArrowSchema:
        const char* format
        int64_t n_children
        ArrowSchema** children
    struct ArrowArray:
        int64_t length
        int64_t null_count
        int64_t offset
        int64_t n_buffers
        int64_t n_children
        const void** buffers
        ArrowArray** children


# ----------------------------------------------------------------------------- Pillow's memory

cdef class _PillowPixels:
    """A read-only buffer over a Pillow image's pixels; holds the Arrow capsules that keep them alive."""
    cdef object schema_capsule, array_capsule
    cdef const uint8_t* data
    cdef Py_ssize_t shape[3]
    cdef Py_ssize_t strides[3]

    def __getbuffer__(self, Py_buffer* view, int flags):
        view.buf = <void*>self.data
        view.obj = self
        view.len = self.shape[0] * self.shape[1] * self.shape[2]
        view.itemsize = 1
        view.readonly = 1
        view.format = "B"
        view.ndim = 3
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass


def image_pixels(image):
    """The pixels of a decoded 8-bit Pillow image as a read-only (H, W, C) uint8 array over Pillow's
    own memory, no copy: C is 1 for L and P, 4 for RGB, RGBA, RGBX and LA (Pillow stores RGB as RGBX,
    LA as L, -, -, A). None when Pillow cannot export it (other modes, rows in several memory blocks,
    a Pillow without Arrow export); the caller then copies with ``numpy.asarray``."""
    export = getattr(image, "__arrow_c_array__", None)
    if export is None:
        return None
    try:
        schema_capsule, array_capsule = export()
    except ValueError:  # "Image rows are not contiguous in memory": large images span memory blocks
        return None
    cdef ArrowSchema* schema = <ArrowSchema*>PyCapsule_GetPointer(schema_capsule, "arrow_schema")
    cdef ArrowArray* array = <ArrowArray*>PyCapsule_GetPointer(array_capsule, "arrow_array")
    cdef ArrowArray* values = array
    cdef Py_ssize_t channels = 1
    cdef bytes fmt = schema.format
    if fmt == b"+w:4" and schema.n_children == 1 and schema.children[0].format == b"C" and array.n_children == 1:
        channels = 4
        values = array.children[0]
    elif fmt != b"C":
        return None
    width, height = image.size
    if (array.offset != 0 or array.null_count != 0 or values.offset != 0 or values.n_buffers != 2
            or array.length != <int64_t>width * height or values.buffers[1] == NULL):
        return None
    cdef _PillowPixels pixels = _PillowPixels.__new__(_PillowPixels)
    pixels.schema_capsule, pixels.array_capsule = schema_capsule, array_capsule
    pixels.data = <const uint8_t*>values.buffers[1]
    pixels.shape[0], pixels.shape[1], pixels.shape[2] = height, width, channels
    pixels.strides[0], pixels.strides[1], pixels.strides[2] = width * channels, channels, 1
    return np.asarray(pixels)


# ----------------------------------------------------------------------------- value -> row

cdef inline uint32_t _row_of_key(const uint32_t* keys, const uint32_t* rows, Py_ssize_t n, uint32_t key,
                                 uint32_t missing) noexcept nogil:
    """Binary search of a packed RGB value among the sorted keys."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return rows[lo] if lo < n and keys[lo] == key else missing


cdef inline uint32_t _key(const uint8_t* m, Py_ssize_t step) noexcept nogil:
    return (<uint32_t>m[0] << 16) | (<uint32_t>m[step] << 8) | m[2 * step]


cdef int _check(Py_ssize_t h, Py_ssize_t w, Py_ssize_t mh, Py_ssize_t mw, Py_ssize_t channels) except -1:
    if mh != h or mw != w or channels < 3:
        raise ValueError(f"shapes disagree: output {h}x{w}, mask {mh}x{mw}, {channels} source channels")
    return 0


# ----------------------------------------------------------------------------- blends

cdef inline void _blend_pixel(const uint8_t* s, Py_ssize_t sp, const uint8_t* lut, Py_ssize_t plane,
                              Py_ssize_t row, uint8_t* o, bint last) noexcept nogil:
    """One output pixel; all but the image's last are stored as four bytes (the fourth is the next
    pixel's first, written after). A source of 4-byte pixels (Pillow's RGBX) is loaded as one word."""
    cdef const uint8_t* r = lut + (row << 8)
    cdef uint32_t v, c0, c1, c2
    if sp == 4:
        v = load_le32(s)
        c0, c1, c2 = r[v & 255], r[plane + ((v >> 8) & 255)], r[2 * plane + ((v >> 16) & 255)]
    else:
        c0, c1, c2 = r[s[0]], r[plane + s[1]], r[2 * plane + s[2]]
    if last:
        o[0], o[1], o[2] = c0, c1, c2
    else:
        store_le32(o, c0 | (c1 << 8) | (c2 << 16))


cdef Py_ssize_t _check_blend(const uint8_t[:, :, ::1] lut, const uint16_t[:, ::1] lanes) except -1:
    """The number of blend rows, after checking that ``lanes`` matches ``lut`` in shape and that its
    blends stay in 16 bits (the exact division needs x <= 65279)."""
    cdef Py_ssize_t rows = lut.shape[1], row, c
    if lut.shape[0] != 3 or lut.shape[2] != 256 or lanes.shape[0] != rows or lanes.shape[1] != 16:
        raise ValueError("the blend tables have the wrong shape")
    for row in range(rows):
        for c in range(3):
            if 255 * <Py_ssize_t>lanes[row, 0] + lanes[row, 8 + c] > 65279:
                raise ValueError("a blend exceeds 16 bits: its weight and colour shares must sum to 255")
    return rows


def blend_index(const uint8_t[:, :, ::1] src, const uint8_t[:, :] index, const uint32_t[::1] row_of,
                const uint8_t[:, :, ::1] lut, const uint16_t[:, ::1] lanes, uint8_t[:, :, ::1] out) -> None:
    """``out[y, x, c] = lut[c, row_of[index[y, x]], src[y, x, c]]``: index masks (L, P) and alpha levels.

    ``src`` may have 4 channels (Pillow's RGBX); only the first three are read. Runs of one index
    over such a source are blended four pixels at a time from ``lanes`` (see ``Blend``)."""
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1], y, x
    _check(h, w, index.shape[0], index.shape[1], src.shape[2])
    if src.shape[0] != h or src.shape[1] != w or row_of.shape[0] < 256 or out.shape[2] != 3:
        raise ValueError("blend_index: source, row table or output has the wrong shape")
    cdef Py_ssize_t rows = _check_blend(lut, lanes), plane = rows * 256
    for x in range(256):
        if row_of[x] >= rows:
            raise ValueError("blend_index: a row outside the blend table")
    if h == 0 or w == 0:
        return
    cdef Py_ssize_t sp = src.strides[1], mp = index.strides[1]
    cdef bint runs = LANES and sp == 4 and mp == 1
    cdef const uint8_t* table = &lut[0, 0, 0]
    cdef const uint16_t* lane = &lanes[0, 0]
    cdef const uint32_t* r = &row_of[0]
    cdef const uint8_t* s
    cdef const uint8_t* m
    cdef uint8_t* o
    cdef uint8_t i
    with nogil:
        for y in range(h):
            s, m, o = &src[y, 0, 0], &index[y, 0], &out[y, 0, 0]
            x = 0
            while runs and x < w:
                i = m[x]
                # four pixels, and a pixel after them to take the two extra bytes
                if x + 4 < w or (x + 4 == w and y < h - 1):
                    if load_le32(m + x) == i * 0x01010101u:
                        blend4(s + 4 * x, lane + 16 * r[i], o + 3 * x)
                    else:
                        blend4_rows(s + 4 * x, lane + 16 * r[i], lane + 16 * r[m[x + 1]], lane + 16 * r[m[x + 2]],
                                    lane + 16 * r[m[x + 3]], o + 3 * x)
                    x += 4
                else:
                    _blend_pixel(s + 4 * x, 4, table, plane, r[i], o + 3 * x, y == h - 1 and x == w - 1)
                    x += 1
            if not runs:
                for x in range(w - 1):
                    _blend_pixel(s + x * sp, sp, table, plane, r[m[x * mp]], o + 3 * x, False)
                x = w - 1
                _blend_pixel(s + x * sp, sp, table, plane, r[m[x * mp]], o + 3 * x, y == h - 1)


def blend_rgb(const uint8_t[:, :, ::1] src, const uint8_t[:, :, :] mask, const uint32_t[::1] keys,
              const uint32_t[::1] rows, uint32_t missing, const uint8_t[:, :, ::1] lut,
              const uint16_t[:, ::1] lanes, uint8_t[:, :, ::1] out) -> None:
    """``out[y, x, c] = lut[c, row, src[y, x, c]]`` where ``row`` is ``rows[i]`` if the pixel's
    (r, g, b) = ``mask[y, x, :3]`` packs to ``keys[i]`` (sorted), else ``missing``: RGB masks.

    A mask is mostly runs of one value, so each pixel is first compared with the previous one, and
    over Pillow's 4-byte pixels four equal pixels are blended at once as in ``blend_index``."""
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1], y, x, n = keys.shape[0]
    _check(h, w, mask.shape[0], mask.shape[1], src.shape[2])
    if (src.shape[0] != h or src.shape[1] != w or mask.shape[2] < 3 or rows.shape[0] != n
            or out.shape[2] != 3):
        raise ValueError("blend_rgb: source, mask, tables or output have the wrong shape")
    cdef Py_ssize_t nrows = _check_blend(lut, lanes), plane = nrows * 256
    for x in range(n):
        if rows[x] >= nrows:
            raise ValueError("blend_rgb: a row outside the blend table")
    if missing >= nrows:
        raise ValueError("blend_rgb: the missing row is outside the blend table")
    if h == 0 or w == 0:
        return
    cdef Py_ssize_t sp = src.strides[1], mp = mask.strides[1], mc = mask.strides[2]
    cdef bint runs = LANES and sp == 4 and mp == 4 and mc == 1 and mask.shape[2] == 4  # Pillow's RGBX
    cdef const uint8_t* table = &lut[0, 0, 0]
    cdef const uint16_t* lane = &lanes[0, 0]
    cdef const uint32_t* k = &keys[0] if n else NULL
    cdef const uint32_t* r = &rows[0] if n else NULL
    cdef const uint8_t* s
    cdef const uint8_t* m
    cdef uint8_t* o
    cdef uint32_t key, last = 0xFFFFFFFF  # no 24-bit value
    cdef uint32_t row = missing
    cdef uint32_t rows4[4]
    cdef int j
    with nogil:
        for y in range(h):
            s, m, o = &src[y, 0, 0], &mask[y, 0, 0], &out[y, 0, 0]
            x = 0
            while x < w:
                key = _key(m + x * mp, mc)
                if key != last:
                    last, row = key, _row_of_key(k, r, n, key, missing)
                if runs and (x + 4 < w or (x + 4 == w and y < h - 1)):
                    if same4(m + 4 * x):
                        blend4(s + 4 * x, lane + 16 * row, o + 3 * x)
                    else:  # a value's edge: each pixel's own row
                        rows4[0] = row
                        for j in range(1, 4):
                            key = _key(m + 4 * (x + j), 1)
                            if key != last:
                                last, row = key, _row_of_key(k, r, n, key, missing)
                            rows4[j] = row
                        blend4_rows(s + 4 * x, lane + 16 * rows4[0], lane + 16 * rows4[1], lane + 16 * rows4[2],
                                    lane + 16 * rows4[3], o + 3 * x)
                    x += 4
                else:
                    _blend_pixel(s + x * sp, sp, table, plane, row, o + 3 * x, y == h - 1 and x == w - 1)
                    x += 1


def rgba(const uint8_t[:, :, ::1] src, const uint8_t[:, :] alpha, uint8_t[:, :, ::1] out) -> None:
    """``out[y, x] = (src r, g, b, alpha)``: a source cut out by its alpha mask."""
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1], y, x
    _check(h, w, alpha.shape[0], alpha.shape[1], src.shape[2])
    if src.shape[0] != h or src.shape[1] != w or out.shape[2] != 4:
        raise ValueError("rgba: source or output has the wrong shape")
    if h == 0 or w == 0:
        return
    cdef Py_ssize_t sp = src.strides[1], ap = alpha.strides[1]
    cdef const uint8_t* s
    cdef const uint8_t* a
    cdef uint8_t* o
    with nogil:
        for y in range(h):
            s, a, o = &src[y, 0, 0], &alpha[y, 0], &out[y, 0, 0]
            if sp == 4:  # Pillow's 4-byte pixels: one word in, one out
                for x in range(w):
                    store_le32(o + 4 * x, (load_le32(s + 4 * x) & 0xFFFFFFu) | (<uint32_t>a[x * ap] << 24))
                continue
            for x in range(w):
                o[4 * x] = s[x * sp]
                o[4 * x + 1] = s[x * sp + 1]
                o[4 * x + 2] = s[x * sp + 2]
                o[4 * x + 3] = a[x * ap]


# ----------------------------------------------------------------------------- colour layers

def layer_index(const uint8_t[:, :] index, const uint32_t[::1] colour_of, uint32_t[:, ::1] out) -> None:
    """``out[y, x] = colour_of[index[y, x]]`` (packed RGBA): an index mask's colour layer."""
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1], y, x
    if index.shape[0] != h or index.shape[1] != w or colour_of.shape[0] < 256:
        raise ValueError("layer_index: mask, table or output has the wrong shape")
    if h == 0 or w == 0:
        return
    cdef Py_ssize_t mp = index.strides[1]
    cdef const uint32_t* c = &colour_of[0]
    cdef const uint8_t* m
    cdef uint32_t* o
    with nogil:
        for y in range(h):
            m, o = &index[y, 0], &out[y, 0]
            for x in range(w):
                o[x] = c[m[x * mp]]


def layer_rgb(const uint8_t[:, :, :] mask, const uint32_t[::1] keys, const uint32_t[::1] rows,
              uint32_t missing, const uint32_t[::1] colours, uint32_t[:, ::1] out) -> None:
    """``out[y, x] = colours[row]`` with ``row`` found as in ``blend_rgb``: an RGB mask's colour layer."""
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1], y, x, n = keys.shape[0]
    if mask.shape[0] != h or mask.shape[1] != w or mask.shape[2] < 3 or rows.shape[0] != n:
        raise ValueError("layer_rgb: mask, tables or output have the wrong shape")
    for x in range(n):
        if rows[x] >= colours.shape[0]:
            raise ValueError("layer_rgb: a row outside the colour table")
    if missing >= colours.shape[0]:
        raise ValueError("layer_rgb: the missing row is outside the colour table")
    if h == 0 or w == 0:
        return
    cdef Py_ssize_t mp = mask.strides[1], mc = mask.strides[2]
    cdef const uint32_t* k = &keys[0] if n else NULL
    cdef const uint32_t* r = &rows[0] if n else NULL
    cdef const uint32_t* c = &colours[0]
    cdef const uint8_t* m
    cdef uint32_t* o
    cdef uint32_t key, last = 0xFFFFFFFF, colour = colours[missing]
    with nogil:
        for y in range(h):
            m, o = &mask[y, 0, 0], &out[y, 0]
            for x in range(w):
                key = _key(m + x * mp, mc)
                if key != last:
                    last, colour = key, c[_row_of_key(k, r, n, key, missing)]
                o[x] = colour
