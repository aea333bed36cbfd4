"""Failures of the file system and damaged run files are one line naming the file and the cause (exit status 2),
found before training where they can be, and leave nothing half-written."""

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genrec import io
from genrec.config import load_config
from genrec.errors import GenrecError
from genrec.runs import load_run, train_run

REPO = Path(__file__).resolve().parents[1]


def genrec(*args, file_limit: int | None = None):
    """`python -m genrec ARGS`; `file_limit` caps the size of any file it writes (bytes), as a full disk would."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "genrec", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        preexec_fn=limit if file_limit else None,
    )


def one_error_line(r, *needles):
    """Exit status 2, no traceback, and one `error:` line (after any per-epoch lines) holding `needles`."""
    errors = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and r.stderr.strip().endswith(errors[0]), r.stderr
    for needle in needles:
        assert needle in errors[0], r.stderr


def test_a_full_disk_is_one_line_and_leaves_no_half_run(tiny_p5, tmp_path):
    out = tmp_path / "run"
    r = genrec(
        "train", "sasrec", "--dataset", str(tiny_p5), "--out", str(out), "--set", "train.epochs=1",
        "--set", "model.dim=64", "--no-progress", file_limit=64_000,
    )  # fmt: skip
    one_error_line(r, "cannot write", "File too large")
    assert not out.exists()  # no checkpoint was written: nothing is kept


def test_a_write_that_runs_out_of_space_removes_its_temporary_file(tmp_path, monkeypatch):
    def full(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(GenrecError, match=r"cannot write .*model.bin: No space left on device"):
        io._atomic(tmp_path / "model.bin", full)
    assert list(tmp_path.iterdir()) == []


def test_out_naming_a_file_or_a_read_only_place_is_refused_before_training(tiny_p5, tmp_path, monkeypatch):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    r = genrec("train", "popularity", "--dataset", str(tiny_p5), "--out", str(a_file))
    one_error_line(r, str(a_file), "is a file")
    r = genrec("train", "popularity", "--dataset", str(tiny_p5), "--out", str(a_file / "run"))
    one_error_line(r, "is a file")
    assert a_file.read_text() == "not a folder"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(io.tempfile, "TemporaryFile", read_only)
    with pytest.raises(GenrecError, match="cannot write into .*: Read-only file system"):
        train_run(load_config("popularity", [], str(tiny_p5)), tmp_path / "ro" / "run", progress=False)
    assert not (tmp_path / "ro").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import write_p5

    root = tmp_path_factory.mktemp("finished")
    data = write_p5(root / "data", [[u] + [(u + k) % 8 + 1 for k in range(5)] for u in range(1, 13)])
    train_run(load_config("popularity", [], str(data)), root / "run", progress=False)
    return root / "run"


@pytest.mark.parametrize(
    "name,damage,needles",
    [
        (
            "config.yaml",
            lambda p: p.write_text("model: [unclosed\n  name: x"),
            ["config.yaml", "not valid YAML"],
        ),
        ("config.yaml", lambda p: p.write_bytes(b"\xff\xfe\x00bad"), ["config.yaml", "not UTF-8"]),
        ("meta.json", lambda p: p.write_text("{half"), ["meta.json", "not valid JSON"]),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:40]), ["model.safetensors", "damaged"]),
        ("items.parquet", lambda p: p.write_bytes(p.read_bytes()[:30]), ["items.parquet", "damaged"]),
    ],
)
def test_a_damaged_run_is_one_line(finished_run, tmp_path, name, damage, needles):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    load_run(run)  # whole, it loads
    damage(run / name)
    one_error_line(genrec("evaluate", str(run), "--no-progress"), *needles)
