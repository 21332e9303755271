"""`FolderShelf`: paused runs as files every worker process reads, so a promoted run resumes wherever it is
trained next. Same contract as the in-memory shelf: within a byte cap, the lowest losses kept, a run resumed
once, the unpromoted dropped, nothing left behind."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from proxy_runs.shared_shelf import FolderShelf
from tests.test_resume import _checkpoint_of as checkpoint_of


def test_a_shelf_keeps_paused_runs_as_files_within_its_cap_and_drops_the_unpromoted(tmp_path: Path) -> None:
    with FolderShelf.create(capacity_bytes=1000, parent=tmp_path) as shelf:
        assert shelf.put(("spec", (4, 1e-3)), checkpoint_of(400)) and shelf.put("b", checkpoint_of(400))
        assert not shelf.put("c", checkpoint_of(400))  # over the cap, and no higher loss to drop
        assert shelf.paused_at(("spec", (4, 1e-3))) == 16 and shelf.paused_at("c") == 0
        shelf.keep_only({"b"})
        assert len(shelf) == 1 and shelf.take(("spec", (4, 1e-3))) is None
        assert shelf.take("b") is not None and shelf.take("b") is None  # a run resumes once
        assert not [p for p in shelf.folder.iterdir()]  # taking a run deletes its files
    assert not list(tmp_path.iterdir())  # closing deletes the folder


def test_a_full_shelf_makes_room_for_a_lower_loss_by_dropping_the_highest(tmp_path: Path) -> None:
    with FolderShelf.create(capacity_bytes=800, parent=tmp_path) as shelf:
        for key, loss in (("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 2.5)):
            shelf.put(key, checkpoint_of(400, loss))
        assert {k for k in "abcd" if shelf.paused_at(k)} == {"b", "c"}
        assert not shelf.put("e", checkpoint_of(400, 4.0))


def _pause_in_a_worker(shelf: FolderShelf) -> None:
    checkpoint = checkpoint_of(400, 1.0)
    checkpoint.parameters["w"].fill_(7.0)
    shelf.put("promoted", checkpoint)


def test_a_run_paused_in_one_process_resumes_in_another(tmp_path: Path) -> None:
    with FolderShelf.create(capacity_bytes=10_000, parent=tmp_path) as shelf:
        worker = multiprocessing.get_context("spawn").Process(target=_pause_in_a_worker, args=(shelf,))
        worker.start()
        worker.join(timeout=120)
        assert worker.exitcode == 0
        assert shelf.paused_at("promoted") == 16  # the study sees it without loading it
        taken = shelf.take("promoted")
        assert taken is not None and torch.equal(taken.parameters["w"], torch.full((100,), 7.0))
