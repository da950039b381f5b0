"""The HDF5 mask store: layout, reader, parts journal, resumable generation (stub source)."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from occo.data.io import read_image  # noqa: E402
from occo.masks.generate import generate_masks, plan  # noqa: E402
from occo.masks.store import (  # noqa: E402
    FORMAT,
    MaskStoreError,
    ModalityMasks,
    PairMasks,
    PartsJournal,
    PartsReader,
    SettingsMismatchError,
    export_masks,
    open_mask_store,
    read_store_attrs,
    summarize_store,
    write_h5_atomic,
    write_pair,
)
from tests import masks_tiny as tiny


def fake_pair(stem: str, shape=(6, 9), boxes: int = 1) -> PairMasks:
    """Masks that depend only on the stem, so two runs can be compared."""
    seed = sum(map(ord, stem))
    rng = np.random.default_rng(seed)
    entries = {}
    for modality in ("ir", "vi"):
        mask = (rng.random(shape) > 0.5).astype(np.uint8) if boxes else np.zeros(shape, np.uint8)
        entries[modality] = ModalityMasks(
            mask=mask,
            boxes=rng.random((boxes, 4)).astype(np.float32) * 5,
            scores=rng.random(boxes).astype(np.float32),
            labels=[f"thing {i}" for i in range(boxes)],
            source=f"{stem}.png",
        )
    return PairMasks(stem=stem, **entries)


class StubSource:
    """A mask source without models: deterministic masks; can 'crash' after some batches."""

    def __init__(
        self, settings: dict | None = None, crash_after: int | None = None, empty: set | None = None
    ):
        self.settings = settings or {"source": "stub", "threshold": 0.5}
        self.crash_after = crash_after
        self.empty = empty or set()
        self.batches: list[list[str]] = []

    def setup(self):
        pass

    def warnings(self):
        return []

    def load(self, pairs):
        return [stem for stem, _, _ in pairs]

    def process(self, stems):
        if self.crash_after is not None and len(self.batches) >= self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        self.batches.append(list(stems))
        return [fake_pair(s, boxes=0 if s in self.empty else 2) for s in stems]


def pairs_of(n: int) -> list[tuple[str, Path, Path]]:
    return [(f"p{i:02d}", Path(f"ir/p{i:02d}.png"), Path(f"vi/p{i:02d}.png")) for i in range(n)]


def test_store_roundtrip_reader_contract(tmp_path):
    out = tmp_path / "masks.h5"
    result = generate_masks(pairs_of(5), out, StubSource(empty={"p03"}), batch_size=2)
    assert (result.stored, result.computed, result.empty_ir, result.empty_vi) == (5, 5, 1, 1)
    reader = open_mask_store(out)
    assert reader.stems() == [f"p{i:02d}" for i in range(5)]
    assert reader.settings["format"] == FORMAT and reader.settings["threshold"] == 0.5
    mask_ir, mask_vi = reader.read("p01")
    expected = fake_pair("p01", boxes=2)
    assert mask_ir.dtype == np.uint8 and mask_ir.shape == (6, 9)
    np.testing.assert_array_equal(mask_ir, expected.ir.mask)
    np.testing.assert_array_equal(mask_vi, expected.vi.mask)
    pair = reader.read_pair("p01")
    np.testing.assert_array_equal(pair.vi.boxes, expected.vi.boxes)
    np.testing.assert_array_equal(pair.ir.scores, expected.ir.scores)
    assert pair.vi.labels == ["thing 0", "thing 1"] and pair.vi.source == "p01.png"
    empty = reader.read_pair("p03")
    assert empty.ir.boxes.shape == (0, 4) and empty.ir.labels == [] and not empty.ir.mask.any()
    with pytest.raises(KeyError, match="p99"):
        reader.read("p99")
    assert not PartsJournal(out).exists()  # the journal is gone after the merge


def _read_in_child(reader, stem, queue):
    queue.put(reader.read(stem)[1].sum())


def test_reader_pickles_and_reads_in_other_processes(tmp_path):
    out = tmp_path / "masks.h5"
    generate_masks(pairs_of(2), out, StubSource(), batch_size=2)
    reader = open_mask_store(out)
    expected = int(reader.read("p00")[1].sum())  # opens a handle in this process first
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._file is None and int(clone.read("p00")[1].sum()) == expected
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(reader, "p00", queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and queue.get(timeout=5) == expected


def test_half_written_stem_is_not_listed(tmp_path):
    path = tmp_path / "masks.h5"

    def fill(h5):
        write_pair(h5, fake_pair("a"))
        h5.require_group("ir").create_dataset("b", data=np.zeros((2, 2), np.uint8))

    write_h5_atomic(path, {"format": FORMAT, "version": 1}, fill)
    assert open_mask_store(path).stems() == ["a"]


def test_not_a_store_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(MaskStoreError, match="not an occo mask store"):
        open_mask_store(other)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(MaskStoreError, match="not an HDF5 file"):
        read_store_attrs(garbage)
    with pytest.raises(FileNotFoundError, match="occo masks gen"):
        open_mask_store(tmp_path / "missing.h5")
    with pytest.raises(MaskStoreError, match="not an occo mask store"):
        generate_masks(pairs_of(1), other, StubSource())


def test_interrupted_run_resumes_to_the_same_store(tmp_path):
    pairs = pairs_of(7)
    reference = tmp_path / "ref.h5"
    generate_masks(pairs, reference, StubSource(), batch_size=2)

    out = tmp_path / "masks.h5"
    with pytest.raises(KeyboardInterrupt):
        generate_masks(pairs, out, StubSource(crash_after=2), batch_size=2)
    assert not out.exists()  # nothing half-written: the store appears only when complete
    journal = PartsJournal(out)
    assert sorted(p.name for p in journal.dir.glob("chunk-*.h5")) == [
        "chunk-000000.h5",
        "chunk-000001.h5",
    ]

    source = StubSource()
    result = generate_masks(pairs, out, source, batch_size=2)
    assert source.batches == [["p04", "p05"], ["p06"]]  # only the unfinished chunks ran
    assert (result.resumed, result.computed, result.stored) == (4, 3, 7)
    assert tiny.store_differences(out, reference) == []


def test_parts_of_an_unfinished_run_can_be_read_but_not_trained_on(tmp_path):
    out = tmp_path / "masks.h5"
    with pytest.raises(FileNotFoundError):
        PartsReader(out)  # no run at all
    with pytest.raises(KeyboardInterrupt):
        generate_masks(
            pairs_of(7), out, StubSource(crash_after=2), batch_size=2, meta={"ir_dir": "/x/ir"}
        )
    partial = PartsReader(out)
    assert partial.stems() == ["p00", "p01", "p02", "p03"] and "p04" not in partial
    assert partial.settings["source"] == "stub" and partial.settings["ir_dir"] == "/x/ir"
    expected = fake_pair("p02", boxes=2)  # what StubSource made
    ir, vi = partial.read("p02")
    np.testing.assert_array_equal(ir, expected.ir.mask)
    np.testing.assert_array_equal(vi, expected.vi.mask)
    assert partial.read_pair("p03").vi.labels == fake_pair("p03", boxes=2).vi.labels
    with pytest.raises(FileNotFoundError):
        open_mask_store(out)  # the trainer's entry point never sees a partial store


def test_new_pairs_are_added_and_old_ones_kept(tmp_path):
    out = tmp_path / "masks.h5"
    generate_masks(pairs_of(3), out, StubSource(), batch_size=2)
    source = StubSource()
    result = generate_masks(pairs_of(5), out, source, batch_size=2)
    assert source.batches == [["p03", "p04"]] and (result.skipped, result.stored) == (3, 5)
    reference = tmp_path / "ref.h5"
    generate_masks(pairs_of(5), reference, StubSource(), batch_size=3)
    assert tiny.store_differences(out, reference) == []
    again = StubSource()
    assert generate_masks(pairs_of(5), out, again).stored == 0 and again.batches == []


def test_other_settings_are_never_mixed_in(tmp_path):
    out = tmp_path / "masks.h5"
    generate_masks(pairs_of(2), out, StubSource(), batch_size=2)
    other = {"source": "stub", "threshold": 0.7}
    with pytest.raises(SettingsMismatchError, match=r"threshold: 0.5 -> 0.7.*--overwrite"):
        generate_masks(pairs_of(3), out, StubSource(other))
    assert open_mask_store(out).stems() == ["p00", "p01"]  # untouched
    result = generate_masks(pairs_of(3), out, StubSource(other), overwrite=True)
    assert result.stored == 3 and open_mask_store(out).settings["threshold"] == 0.7


def test_interrupted_run_with_other_settings_needs_overwrite(tmp_path):
    out = tmp_path / "masks.h5"
    with pytest.raises(KeyboardInterrupt):
        generate_masks(pairs_of(4), out, StubSource(crash_after=1), batch_size=2)
    other = {"source": "stub", "threshold": 0.9}
    with pytest.raises(SettingsMismatchError, match="interrupted run"):
        generate_masks(pairs_of(4), out, StubSource(other), batch_size=2)
    source = StubSource(other)
    generate_masks(pairs_of(4), out, source, batch_size=2, overwrite=True)
    assert len(source.batches) == 2  # the other settings' part was discarded, not reused


def test_journal_cleans_what_a_kill_leaves(tmp_path):
    out = tmp_path / "masks.h5"
    pairs = pairs_of(6)
    with pytest.raises(KeyboardInterrupt):
        generate_masks(pairs, out, StubSource(crash_after=2), batch_size=2)
    journal = PartsJournal(out)
    # A kill inside a part write or the merge leaves temporary files; a broken part is ignored.
    (journal.dir / ".chunk-000002.h5.abc.tmp").write_bytes(b"partial")
    (journal.dir / ".masks.h5.xyz.tmp").write_bytes(b"partial")
    journal.part_path(1).write_bytes(b"truncated")
    source = StubSource()
    generate_masks(pairs, out, source, batch_size=2)
    assert source.batches == [["p02", "p03"], ["p04", "p05"]]
    assert not journal.dir.exists()
    reference = tmp_path / "ref.h5"
    generate_masks(pairs, reference, StubSource(), batch_size=2)
    assert tiny.store_differences(out, reference) == []


def test_kill_between_merge_and_cleanup(tmp_path):
    out = tmp_path / "masks.h5"
    generate_masks(pairs_of(3), out, StubSource(), batch_size=2)
    journal = PartsJournal(out)
    journal.dir.mkdir()
    (journal.dir / "chunk-000000.h5").write_bytes(b"left over")
    assert generate_masks(pairs_of(3), out, StubSource()).stored == 0
    assert not journal.dir.exists()


def test_merge_refuses_missing_chunks(tmp_path):
    journal = PartsJournal(tmp_path / "masks.h5")
    journal.prepare({"source": "stub"}, [["a"], ["b"]], overwrite=False)
    journal.write(0, [fake_pair("a")])
    assert journal.has(0, ["a"]) and not journal.has(0, ["b"]) and not journal.has(1, ["b"])
    with pytest.raises(MaskStoreError, match="chunk-000001"):
        journal.merge({"format": FORMAT}, [["a"], ["b"]], None)
    assert not (tmp_path / "masks.h5").exists()


def test_second_writer_is_refused(tmp_path):
    pytest.importorskip("fcntl")
    first = PartsJournal(tmp_path / "masks.h5")
    first.prepare({"source": "stub"}, [["a"]], overwrite=False)
    with pytest.raises(MaskStoreError, match="another"):
        PartsJournal(tmp_path / "masks.h5").prepare({"source": "stub"}, [["a"]], overwrite=False)
    first.remove()


def test_plan_is_fixed_by_store_and_batch_size():
    pairs = pairs_of(5)[::-1]
    chunks = plan(pairs, {"p01"}, 2)
    assert [[p[0] for p in c] for c in chunks] == [["p00", "p02"], ["p03", "p04"]]
    with pytest.raises(ValueError):
        plan(pairs, set(), 0)


def test_summary_and_export(tmp_path):
    out = tmp_path / "masks.h5"
    generate_masks(pairs_of(3), out, StubSource(empty={"p02"}), batch_size=3)
    reader = open_mask_store(out)
    summary = summarize_store(reader)
    masks = [reader.read(s) for s in reader.stems()]
    assert summary["pairs"] == 3 and summary["both_empty"] == 1
    assert summary["ir"]["empty"] == 1 and summary["vi"]["boxes_max"] == 2
    assert summary["vi"]["coverage"]["mean"] == pytest.approx(
        np.mean([vi.mean() for _, vi in masks])
    )
    shared = np.mean([(ir & vi).mean() for ir, vi in masks])
    assert summary["regions"]["shared"] == pytest.approx(shared)
    assert sum(summary["regions"].values()) == pytest.approx(1.0)

    assert export_masks(reader, tmp_path / "export") == 3
    png = read_image(tmp_path / "export" / "mask_vi" / "mask_p01.png")
    assert set(np.unique(png)) <= {0, 255}
    np.testing.assert_array_equal(png // 255, reader.read("p01")[1])
    assert (tmp_path / "export" / "mask_ir" / "mask_p02.png").is_file()


def test_modality_masks_validate():
    entry = ModalityMasks(mask=np.array([[0, 3], [1, 0]]))
    assert entry.mask.dtype == np.uint8 and entry.mask.tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="boxes"):
        ModalityMasks(
            mask=np.zeros((2, 2)), boxes=np.zeros((2, 4)), scores=np.zeros(1), labels=["a", "b"]
        )
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ModalityMasks(mask=np.zeros((2, 2, 3)))


def test_failed_model_load_leaves_nothing_behind(tmp_path):
    class Broken(StubSource):
        def setup(self):
            raise OSError("no such model")

    out = tmp_path / "masks.h5"
    with pytest.raises(OSError):
        generate_masks(pairs_of(2), out, Broken())
    assert not out.exists() and not PartsJournal(out).exists()
    other = StubSource({"source": "stub", "threshold": 0.1})
    assert generate_masks(pairs_of(2), out, other).stored == 2


def test_dtype_resolution():
    import torch

    from occo.masks.generate import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "float16"
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("half", torch.device("cpu"))
