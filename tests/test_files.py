"""The output-path policy and the bounded reader of ``sgdsai_cli.files``.

Outputs: an absent path or a regular file is replaced atomically; a symlink is written through to its
target (the link stays a link); a directory, FIFO, device node or socket is refused (BadInput, exit 2)
and left as it was; an OSError while writing is one BadInput line naming the path and the reason, with
no temp file left. Inputs: only regular files are opened, and never read past the cap.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import pytest
from typer.testing import CliRunner

from sgdsai_cli import files
from sgdsai_cli.cli import app
from sgdsai_cli.errors import BadInput
from sgdsai_cli.files import check_writable, prepare_out_dir, read_head, read_text_bounded, write_text_atomic

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("no_hang")


def _mknod(path, kind):
    """A copy of /dev/null or /dev/zero made inside tmp_path (skips where mknod is not allowed)."""
    minor = {"null": 3, "zero": 5}[kind]
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here ({e})")
    return path


def _socket(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
    except OSError as e:
        s.close()
        pytest.skip(f"cannot bind a unix socket at {path} ({e})")
    s.close()
    return path


# (what to make, the kind in the message, the stat test it must still pass afterwards)
SPECIALS = [
    ("dir", lambda p: p.mkdir() or p, "directory", stat.S_ISDIR),
    ("fifo", lambda p: os.mkfifo(p) or p, "FIFO", stat.S_ISFIFO),
    ("device", lambda p: _mknod(p, "null"), "character device", stat.S_ISCHR),
    ("socket", _socket, "socket", stat.S_ISSOCK),
]


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("write", [check_writable, lambda p: write_text_atomic(p, "x"),
                                   lambda p: write_text_atomic(p, b"x")], ids=["check", "text", "bytes"])
@pytest.mark.parametrize(("name", "make", "kind", "still"), SPECIALS, ids=[s[0] for s in SPECIALS])
def test_non_regular_output_is_refused_and_kept(tmp_path, write, name, make, kind, still):
    path = make(tmp_path / name)
    with pytest.raises(BadInput) as e:
        write(path)
    assert str(e.value) == f"cannot write '{path}': it is a {kind}"
    assert e.value.exit_code == 2
    assert still(os.lstat(path).st_mode)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("name", "make", "kind", "still"), SPECIALS, ids=[s[0] for s in SPECIALS])
def test_symlink_to_non_regular_is_refused_and_stays_a_link(tmp_path, name, make, kind, still):
    target = make(tmp_path / name)
    link = tmp_path / "link.json"
    os.symlink(target, link)
    with pytest.raises(BadInput, match=f"^cannot write '{link}': it is a {kind}$"):
        write_text_atomic(link, "x")
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert still(os.lstat(target).st_mode)


def test_symlink_to_regular_file_is_written_through(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    os.symlink("real.json", link)  # relative, as `ln -s` makes them
    assert write_text_atomic(link, "new\n") == link
    assert os.path.islink(link) and os.readlink(link) == "real.json"
    assert target.read_text() == "new\n"
    assert _leftovers(tmp_path) == []


def test_chain_of_symlinks_into_another_folder(tmp_path):
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "out" / "r.json", tmp_path / "b")
    os.symlink(tmp_path / "b", tmp_path / "a")
    write_text_atomic(tmp_path / "a", "x")  # dangling: the final target is created
    assert os.path.islink(tmp_path / "a") and os.path.islink(tmp_path / "b")
    assert (tmp_path / "out" / "r.json").read_text() == "x"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "out") == []


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: os.symlink(p / "loop", p / "loop"), "too many levels of symbolic links"),
    (lambda p: os.symlink(p / "nowhere" / "r.json", p / "loop"), f"folder '{{p}}{os.sep}nowhere' does not exist"),
])
def test_symlink_that_cannot_be_written_through(tmp_path, make, needle):
    make(tmp_path)
    with pytest.raises(BadInput) as e:
        check_writable(tmp_path / "loop")
    assert str(e.value) == f"cannot write '{tmp_path / 'loop'}': {needle.format(p=tmp_path)}"


@pytest.mark.parametrize("write", [check_writable, lambda p: write_text_atomic(p, "x")], ids=["check", "write"])
@pytest.mark.parametrize("where", ["name", "folder"])
def test_name_too_long_is_bad_input(tmp_path, write, where):
    long = "a" * 300
    path = tmp_path / long if where == "name" else tmp_path / long / "r.json"
    with pytest.raises(BadInput) as e:
        write(path)
    assert str(e.value) == f"cannot write '{path}': file name too long"
    assert e.value.exit_code == 2
    assert os.listdir(tmp_path) == []


def test_longest_allowed_name_is_written(tmp_path):
    path = tmp_path / ("b" * 250 + ".json")  # its temp name would pass 255 bytes if made from it
    write_text_atomic(path, "x")
    assert path.read_text() == "x" and os.listdir(tmp_path) == [path.name]


def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


# (what fails, the reason in the message)
WRITE_FAULTS = [
    ("fsync", errno.ENOSPC, "no space left on the device"),
    ("fsync", errno.EDQUOT, "disk quota exceeded"),
    ("replace", errno.EACCES, "no permission"),
    ("replace", errno.EROFS, "read-only file system"),
    ("mkstemp", errno.EACCES, "no permission"),
    ("fchmod", errno.EPERM, "no permission"),
    ("fsync", errno.EIO, "input/output error"),
]


@pytest.mark.parametrize(("where", "code", "reason"), WRITE_FAULTS)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replace"])
def test_os_error_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, where, code, reason, existing):
    path = tmp_path / "r.json"
    if existing:
        path.write_text("kept")
    target = files.tempfile if where == "mkstemp" else os
    monkeypatch.setattr(target, where, _raise(code))
    with pytest.raises(BadInput) as e:
        write_text_atomic(path, "new" * 1000)
    assert str(e.value) == f"cannot write '{path}': {reason}"
    assert e.value.exit_code == 2
    assert _leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == (["r.json"] if existing else [])
    if existing:
        assert path.read_text() == "kept"


def test_full_disk_during_the_write_itself(tmp_path, monkeypatch):
    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real(fd, *a, **k)))
    with pytest.raises(BadInput, match="no space left on the device$"):
        write_text_atomic(tmp_path / "r.json", "x")
    assert os.listdir(tmp_path) == []


def test_interrupt_while_writing_removes_the_temp_file(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "r.json", "x")
    assert os.listdir(tmp_path) == []


def test_replaced_file_keeps_its_permissions_and_new_file_follows_umask(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    write_text_atomic(kept, "new")
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o640 and kept.read_text() == "new"
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "fresh.json", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "fresh.json").st_mode) == 0o644


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: "", "cannot write to '': the folder name is empty"),
    (lambda p: (p / "f").write_text("x") and p / "f", "cannot write to '{p}/f': it is a file, not a folder"),
    (lambda p: os.mkfifo(p / "q") or p / "q", "cannot write to '{p}/q': it is a FIFO, not a folder"),
    (lambda p: p / ("c" * 300), "cannot create folder '{p}/" + "c" * 300 + "' (file name too long)"),
])
def test_prepare_out_dir_refuses(tmp_path, make, message):
    with pytest.raises(BadInput) as e:
        prepare_out_dir(make(tmp_path), "result.json")
    assert str(e.value) == message.format(p=tmp_path)


def test_prepare_out_dir_refuses_a_special_first_file(tmp_path):
    os.mkfifo(tmp_path / "result.json")
    with pytest.raises(BadInput, match="it is a FIFO$"):
        prepare_out_dir(tmp_path, "result.json")


def test_empty_output_name_is_refused():
    with pytest.raises(BadInput, match="^cannot write '': the file name is empty$"):
        check_writable("")


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(("name", "make", "kind", "still"), SPECIALS, ids=[s[0] for s in SPECIALS])
def test_profile_json_at_a_special_file_exits_2_before_work(tmp_path, name, make, kind, still):
    path = make(tmp_path / name)
    res = runner.invoke(app, ["profile", "-m", "tiny-gpt2", "--device", "meta", "-q", "--json", str(path)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: cannot write '{path}': it is a {kind}"
    assert still(os.lstat(path).st_mode)


def test_profile_json_through_a_symlink(tmp_path):
    (tmp_path / "real.json").write_text("old")
    os.symlink("real.json", tmp_path / "link.json")
    res = runner.invoke(app, ["profile", "-m", "tiny-gpt2", "--device", "meta", "-q",
                              "--json", str(tmp_path / "link.json")])
    assert res.exit_code == 0, res.output
    assert os.path.islink(tmp_path / "link.json")
    assert '"kind": "profile"' in (tmp_path / "real.json").read_text()


def test_profile_json_name_too_long_exits_2(tmp_path):
    path = tmp_path / ("r" * 300 + ".json")
    res = runner.invoke(app, ["profile", "-m", "tiny-gpt2", "--device", "meta", "-q", "--json", str(path)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: cannot write '{path}': file name too long"


# ---------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(("name", "make", "kind", "still"), SPECIALS, ids=[s[0] for s in SPECIALS])
def test_read_refuses_non_regular_without_opening(tmp_path, opened, name, make, kind, still):
    path = make(tmp_path / name)
    with pytest.raises(BadInput) as e:
        read_text_bounded(path)
    assert str(e.value) == f"{path}: not a regular file (it is a {kind})"
    assert str(path) not in opened


def test_read_refuses_a_link_to_a_device_without_opening(tmp_path, opened):
    zero = _mknod(tmp_path / "zero", "zero")
    os.symlink(zero, tmp_path / "link.json")
    with pytest.raises(BadInput, match="not a regular file \\(it is a character device\\)$"):
        read_text_bounded(tmp_path / "link.json")
    assert opened == []


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: p / "missing.json", "{path}: no such file"),
    (lambda p: (p / "f").write_text("x") and p / "f" / "below.json", "{path}: no such file"),
    (lambda p: p / ("n" * 300), "{path}: cannot read (File name too long)"),
    (lambda p: (p / "big.json").write_text("x" * 11) and p / "big.json", "{path}: larger than 10 bytes"),
    (lambda p: (p / "bin.json").write_bytes(b"\xff\xfe") and p / "bin.json", "{path}: cannot read (not UTF-8 text)"),
])
def test_read_text_bounded_errors(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(BadInput) as e:
        read_text_bounded(path, max_bytes=10)
    assert str(e.value) == needle.format(path=path)


def test_read_text_bounded_reads_a_file_at_the_cap(tmp_path):
    (tmp_path / "ok.json").write_text("x" * 10)
    assert read_text_bounded(tmp_path / "ok.json", max_bytes=10) == "x" * 10


@pytest.mark.parametrize(("size", "limit", "expected"), [(0, 5, 0), (3, 5, 3), (5 << 20, 1 << 20, 1 << 20),
                                                          (5 << 20, 0, 0)])
def test_read_head_reads_only_what_is_asked(tmp_path, monkeypatch, size, limit, expected):
    path = tmp_path / "data"
    path.write_bytes(b"t" * size)
    asked: list[int] = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: asked.append(n) or real(fd, n))
    assert len(read_head(path, limit)) == expected
    assert sum(asked) == expected and all(n <= 1 << 20 for n in asked)
