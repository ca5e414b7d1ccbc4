"""``maskstore check --repair``: indexes broken every way (entries deleted, stale entries added, id
entries deleted or pointing elsewhere, the frame count wrong) are found by ``check`` and rebuilt from
the frame records, which repair never changes."""

from __future__ import annotations

from pathlib import Path

from maskstore import Archive, frame_groups, records
from maskstore.layout import text_key, u64, value_key

from .helpers import DATASET, VERSION, assert_archive_consistent, cli, edit_postings, frame_id


def records_of(path: Path) -> dict[bytes, bytes]:
    with Archive(path, readonly=True) as ar:
        db = ar.db("frames")
        return ar.read(lambda txn: {bytes(k): bytes(v) for k, v in txn.cursor(db=db)})


def break_indexes(path: Path) -> list[str]:
    """Damage d/v1's indexes; returns words each resulting ``check`` problem must mention."""
    with Archive(path, jobs=1) as ar:
        v = ar.get_version(DATASET, VERSION)
        p = v.prefix
        seq_of = {fid: u64(n) for n, fid in enumerate(frame_id(b, i) for b in range(20) for i in range(50))}
        deleted_value: list[int] = []

        def work(txn) -> None:
            # Entries deleted: a context entry, a mask-value entry, a source entry, a ROI entry.
            edit_postings(txn, ar.db("ix_context"), remove=[(p + text_key("ctx-1"), seq_of[frame_id(0, 1)])])
            rec = frame_groups.Records(txn, ar, p).frame(int.from_bytes(seq_of[frame_id(0, 2)], "big"))
            v2 = rec["sources"][0]["masks"][0]["values"][1][:3]
            edit_postings(txn, ar.db("ix_value"), remove=[(p + value_key(v2), seq_of[frame_id(0, 2)])])
            deleted_value.extend(v2)
            edit_postings(txn, ar.db("ix_source"), remove=[(p + text_key("0"), seq_of[frame_id(0, 3)])])
            edit_postings(txn, ar.db("ix_roi"), remove=[(p + text_key("roi1"), seq_of[frame_id(0, 4)])])
            # Stale entries added: to a seq with no frame, and to the wrong frame.
            edit_postings(txn, ar.db("ix_context"), add=[(p + text_key("ctx-1"), u64(999_999)),
                                                         (p + text_key("ctx-9"), seq_of[frame_id(5, 5)])])
            edit_postings(txn, ar.db("ix_value"), add=[(p + value_key((9, 9, 9)), seq_of[frame_id(6, 6)])])
            edit_postings(txn, ar.db("ix_source"), add=[(p + text_key("src-x"), seq_of[frame_id(7, 7)])])
            edit_postings(txn, ar.db("ix_mask"), add=[(p + text_key("00"), u64(888_888))])
            # Id entries: two deleted, one pointing at another frame's record, one dangling.
            for fid in (frame_id(10, 0), frame_id(10, 1)):
                assert txn.delete(p + text_key(fid), db=ar.db("frame_ids"))
            txn.put(p + text_key(frame_id(11, 0)), seq_of[frame_id(11, 1)], db=ar.db("frame_ids"))
            txn.put(p + text_key("ghost"), u64(777_777), db=ar.db("frame_ids"))
            # And the version record's count.
            vrec = v.record(txn)
            vrec["count"] += 3
            txn.put(p, records.encode_version(vrec), db=ar.db("versions"))
        ar.write(work)
    v2 = deleted_value
    return [f"frame {frame_id(0, 1)}: context id 'ctx-1' is not in the context index",
            f"frame {frame_id(0, 2)}: mask value ({v2[0]}, {v2[1]}, {v2[2]}) is not in the value index",
            f"frame {frame_id(0, 3)}: source id '0' is not in the source index",
            f"frame {frame_id(0, 4)}: ROI label 'roi1' is not in the ROI label index",
            "the context index lists context id 'ctx-1' for frame seq 999999, which holds no frame",
            f"frame {frame_id(5, 5)}: the context index lists the frame under context id 'ctx-9'",
            f"frame {frame_id(6, 6)}: the value index lists the frame under mask value (9, 9, 9)",
            f"frame {frame_id(7, 7)}: the source index lists the frame under source id 'src-x'",
            "the mask index lists mask id '00' for frame seq 888888, which holds no frame",
            f"frame {frame_id(10, 0)}: it has no entry in the id table",
            f"the id table sends frame id '{frame_id(11, 0)}' to frame seq",
            "the id table sends frame id 'ghost' to frame seq 777777",
            "the version record counts 1003 frames"]


def test_check_finds_every_broken_index_and_repair_rebuilds_them(fresh_copy) -> None:
    path = fresh_copy()
    with Archive(path, jobs=1) as ar:
        ar.get_version(DATASET, VERSION).ids("")  # stored scan columns too, so repair must not need them
    before = records_of(path)
    expected = break_indexes(path)
    result = cli("check", path)
    assert result.returncode == 1, result.stdout
    for words in expected:
        assert words in result.stdout, f"check did not report {words!r}:\n{result.stdout}"
    assert "0 errors" not in result.stderr
    with Archive(path, readonly=True) as ar:  # visibly wrong before the repair
        v = ar.get_version(DATASET, VERSION)
        assert frame_id(10, 0) not in v and len(v) == 1003

    repaired = cli("check", "--repair", path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "0 errors" in repaired.stderr
    again = cli("check", path)
    assert again.returncode == 0 and again.stdout == "", again.stdout

    assert records_of(path) == before, "repair changed frame records"
    snap = assert_archive_consistent(path, batch_size=50)[f"{DATASET}/{VERSION}"]
    assert len(snap.ids) == 1000 and snap.batch_numbers == set(range(20))
    with Archive(path, readonly=True) as ar:
        v = ar.get_version(DATASET, VERSION)
        assert v.get_frame(frame_id(10, 0)).id == frame_id(10, 0)
        assert v.get_frame_dict(frame_id(11, 0))["id"] == frame_id(11, 0)
        assert "ghost" not in v
        assert v.ids('context_id == "ctx-9"') == [] and v.ids("mask.value == [9, 9, 9]") == []


def test_repair_of_a_healthy_archive_changes_nothing_visible(fresh_copy) -> None:
    path = fresh_copy()
    before = records_of(path)
    result = cli("check", "--repair", path)
    assert result.returncode == 0 and "0 errors, 0 warnings" in result.stderr
    assert records_of(path) == before
    assert len(assert_archive_consistent(path, batch_size=50)[f"{DATASET}/{VERSION}"].ids) == 1000
