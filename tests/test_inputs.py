"""Input files that are not what they claim: config.json (``--model``) and ``gsnr --data``.

A FIFO or a device (directly, through a symlink, or inside a ``--data`` folder) is refused or passed
over without being opened, so nothing hangs and nothing reads without end; a big file is read only as
far as it is used; a binary file given as text data is refused when text is required.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app
from sgdsai_cli.errors import BadInput
from sgdsai_cli.models import hf_config, resolve_model
from sgdsai_cli.models.corpus import load_corpus

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("no_hang")
GPT2 = {"model_type": "gpt2", "vocab_size": 512, "n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 4}
TEXT = "The quick brown fox jumps over the lazy dog.\n"


@pytest.fixture
def bytes_read(monkeypatch):
    """The sizes asked of ``os.read`` during the test."""
    asked: list[int] = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: asked.append(n) or real(fd, n))
    return asked


def _zero(tmp_path):
    """A copy of /dev/zero made inside tmp_path (skips where mknod is not allowed)."""
    path = tmp_path / "zero"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    except OSError as e:
        pytest.skip(f"cannot make a device node here ({e})")
    return path


def _link_to_dev_zero(tmp_path):
    """A symlink in tmp_path to the real /dev/zero (only ever stat'ed, never opened)."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    os.symlink("/dev/zero", tmp_path / "zero-link")
    return tmp_path / "zero-link"


# (make the thing, what the message says it is)
SPECIAL_INPUTS = [
    ("fifo", lambda p: os.mkfifo(p / "config.json") or p / "config.json", "FIFO"),
    ("device", _zero, "character device"),
    ("link-to-dev-zero", _link_to_dev_zero, "character device"),
]


# ---------------------------------------------------------------------------------------------- config.json


@pytest.mark.parametrize(("name", "make", "kind"), SPECIAL_INPUTS, ids=[s[0] for s in SPECIAL_INPUTS])
def test_config_json_that_is_not_a_regular_file(tmp_path, opened, name, make, kind):
    path = str(make(tmp_path))
    with pytest.raises(BadInput) as e:
        resolve_model(path)
    assert str(e.value) == f"{path}: not a regular file (it is a {kind})"
    assert e.value.value == path
    assert opened == []


def test_config_folder_whose_config_json_is_a_fifo(tmp_path, opened):
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(BadInput, match="config.json: not a regular file \\(it is a FIFO\\)$"):
        resolve_model(str(tmp_path))
    assert opened == []


def test_config_json_over_the_size_cap(tmp_path, monkeypatch, bytes_read):
    monkeypatch.setattr(hf_config, "MAX_CONFIG_BYTES", 1000)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GPT2, "pad": "x" * 5000}))
    with pytest.raises(BadInput, match=f"^{path}: larger than 1000 bytes$"):
        resolve_model(str(path))
    assert sum(bytes_read) == 0  # refused by its size, before reading


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: p / "missing" / "config.json", "{path}: no such file"),
    (lambda p: p / ("c" * 300 + ".json"), "{path}: cannot read (File name too long)"),
])
def test_config_json_path_errors(tmp_path, make, needle):
    path = str(make(tmp_path))
    with pytest.raises(BadInput) as e:
        resolve_model(path)
    assert str(e.value) == needle.format(path=path)


def test_config_json_regular_file_still_loads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    assert resolve_model(str(tmp_path / "config.json")).config.n_embd == 64


@pytest.mark.parametrize(("name", "make", "kind"), SPECIAL_INPUTS, ids=[s[0] for s in SPECIAL_INPUTS])
@pytest.mark.parametrize("command", [["profile", "--device", "meta", "-q"], ["plan"]])
def test_cli_model_that_is_not_a_regular_file_exits_2(tmp_path, name, make, kind, command):
    path = make(tmp_path)
    res = runner.invoke(app, [command[0], "--model", str(path), *command[1:]])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {path}: not a regular file (it is a {kind})"


# ---------------------------------------------------------------------------------------------- gsnr --data


def test_data_folder_passes_over_fifos_and_devices_unopened(tmp_path, opened):
    (tmp_path / "a.txt").write_text(TEXT)
    os.mkfifo(tmp_path / "b.fifo")
    _link_to_dev_zero(tmp_path)
    _zero(tmp_path)
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "c.txt")
    corpus = load_corpus(tmp_path)
    assert corpus.files == 1 and bytes(corpus.data.tolist()) == TEXT.encode()
    assert opened == [str(tmp_path / "a.txt")]


def test_data_folder_of_only_special_files(tmp_path):
    os.mkfifo(tmp_path / "b.fifo")
    _link_to_dev_zero(tmp_path)
    with pytest.raises(BadInput, match="folder holds no non-empty text files$"):
        load_corpus(tmp_path)


@pytest.mark.parametrize(("name", "make", "kind"), SPECIAL_INPUTS, ids=[s[0] for s in SPECIAL_INPUTS])
def test_data_given_as_a_special_file_is_refused_unopened(tmp_path, opened, name, make, kind):
    path = make(tmp_path)
    with pytest.raises(BadInput) as e:
        load_corpus(path)
    assert str(e.value) == f"data '{path}': not a file or folder (it is a {kind})"
    assert (e.value.field, e.value.value) == ("data", str(path))
    assert opened == []


@pytest.mark.parametrize("content", [b"\x00\x01\x02" * 100, b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8,
                                     "caf\u00e9".encode("latin-1") * 10])
def test_binary_data_file_is_refused_when_text_is_required(tmp_path, content):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(BadInput) as e:
        load_corpus(path, text_only=True)
    assert str(e.value) == (f"data '{path}': does not look like text "
                            "(a NUL byte or invalid UTF-8 in its first 8 KiB)")
    assert e.value.field == "data"


def test_text_data_file_passes_the_text_check(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("caf\u00e9 " * 3000, encoding="utf-8")  # a multi-byte character cut at 8 KiB is fine
    assert load_corpus(path, text_only=True).n_bytes == len("caf\u00e9 ".encode()) * 3000


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
def test_big_text_file_is_read_only_as_far_as_used(tmp_path, bytes_read, as_folder):
    path = tmp_path / "big.txt"
    path.write_text(TEXT * (8 * 2**20 // len(TEXT) + 1))  # 8 MiB of text
    corpus = load_corpus(tmp_path if as_folder else path, max_bytes=2**20)
    assert corpus.n_bytes == 2**20 and corpus.files == 1
    assert sum(bytes_read) <= 2**20 + 8192 and max(bytes_read) <= 2**20


def test_three_gigabyte_sparse_file_costs_only_max_bytes(tmp_path, bytes_read):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.write(TEXT.encode() * 1000)
        f.truncate(3 * 2**30)  # sparse: no disk, but 3 GiB to anyone who reads it whole
    corpus = load_corpus(path, max_bytes=2**20)
    assert corpus.n_bytes == 2**20
    assert sum(bytes_read) <= 2**20 + 8192


def test_many_files_stop_at_max_bytes(tmp_path, opened):
    for i in range(10):
        (tmp_path / f"{i:02}.txt").write_text("x" * 1000)
    corpus = load_corpus(tmp_path, max_bytes=2500)
    assert corpus.n_bytes == 2500 and corpus.files == 3
    assert opened == [str(tmp_path / f"{i:02}.txt") for i in range(3)]


def test_cli_gsnr_data_folder_with_fifo_and_dev_zero(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT * 50)
    os.mkfifo(tmp_path / "b.fifo")
    _link_to_dev_zero(tmp_path)
    res = runner.invoke(app, ["gsnr", "--model", "tiny-gpt2", "--device", "cpu", "--steps", "0,2",
                              "--batch-size", "2", "--seq-len", "16", "--data", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert f"{len(TEXT) * 50:,} bytes of real text from {tmp_path} (1 files)" in res.stdout


@pytest.mark.parametrize(("name", "make", "kind"), SPECIAL_INPUTS, ids=[s[0] for s in SPECIAL_INPUTS])
def test_cli_gsnr_data_special_file_exits_2(tmp_path, name, make, kind):
    path = make(tmp_path)
    res = runner.invoke(app, ["gsnr", "--model", "tiny-gpt2", "--device", "cpu", "--steps", "0,1",
                              "--data", str(path)])
    assert res.exit_code == 2, res.output
    assert f"not a file or folder (it is a {kind})" in res.stderr and len(res.stderr.splitlines()) == 1
