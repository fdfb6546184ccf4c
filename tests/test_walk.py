"""The walker on real trees in tmp dirs: skips, .gitignore, symlinks, odd names, failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.walk import FileEntry, IndexSettings, WalkProblem, admit, parse_size, walk


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files(root: Path, settings: IndexSettings | None = None, **kw) -> list[str]:
    """Paths (relative to root, '/'-separated) of the FileEntry items."""
    out = []
    for item in walk([root], settings or IndexSettings(**kw), skip_dirs=()):
        if isinstance(item, FileEntry):
            out.append(os.path.relpath(item.path, root).replace(os.sep, "/"))
    return out


def problems(root: Path, settings: IndexSettings | None = None) -> list[WalkProblem]:
    items = walk([root], settings or IndexSettings(), skip_dirs=())
    return [i for i in items if isinstance(i, WalkProblem)]


def test_entries_have_stat_and_stable_order(tmp_path: Path) -> None:
    touch(tmp_path / "b.txt", b"12345")
    touch(tmp_path / "a" / "z.txt")
    touch(tmp_path / "a" / "y.txt")
    items = list(walk([tmp_path], skip_dirs=()))
    assert [os.path.relpath(i.path, tmp_path) for i in items] == [
        "b.txt",
        os.path.join("a", "y.txt"),
        os.path.join("a", "z.txt"),
    ]
    b = items[0]
    assert isinstance(b, FileEntry)
    assert b.size == 5 and b.mtime_ns == os.stat(b.path).st_mtime_ns
    assert b.root == str(tmp_path)


def test_default_skips(tmp_path: Path) -> None:
    touch(tmp_path / "keep.md")
    touch(tmp_path / ".hidden.txt")
    touch(tmp_path / ".config" / "app.txt")
    touch(tmp_path / ".git" / "config")
    touch(tmp_path / "proj" / "node_modules" / "lib" / "index.js")
    touch(tmp_path / "proj" / "__pycache__" / "m.cpython-311.pyc")
    touch(tmp_path / "proj" / "env" / "pyvenv.cfg")  # a virtualenv under any name
    touch(tmp_path / "proj" / "env" / "lib" / "site.py")
    touch(tmp_path / "proj" / "conda" / "conda-meta" / "history")
    touch(
        tmp_path / "proj" / "target" / "CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    touch(tmp_path / "proj" / "target" / "debug" / "out.txt")
    touch(tmp_path / "proj" / "pkg.egg-info" / "PKG-INFO")
    touch(tmp_path / "proj" / "main.py")
    touch(tmp_path / "keys" / "id_ed25519")
    touch(tmp_path / "keys" / "server.pem")
    touch(tmp_path / "keys" / "notes.txt")
    touch(tmp_path / "Thumbs.db")
    assert files(tmp_path) == ["keep.md", "keys/notes.txt", "proj/main.py"]


def test_secrets_skipped_even_when_hidden_files_are_wanted(tmp_path: Path) -> None:
    touch(tmp_path / ".ssh" / "config")
    touch(tmp_path / ".gnupg" / "pubring.kbx")
    touch(tmp_path / "share" / "keyrings" / "login.keyring")
    touch(tmp_path / ".env")
    touch(tmp_path / ".bashrc")
    got = files(tmp_path, skip_hidden=False, default_excludes=False)
    assert got == [".bashrc"]


def test_default_excludes_off(tmp_path: Path) -> None:
    touch(tmp_path / "node_modules" / "a.js")
    touch(tmp_path / "v" / "pyvenv.cfg")
    assert files(tmp_path, default_excludes=False) == ["node_modules/a.js", "v/pyvenv.cfg"]


def _repo(root: Path) -> Path:
    (root / ".git").mkdir(parents=True)
    return root


def test_gitignore_nested_and_negation(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    touch(repo / ".gitignore", b"*.log\nbuild/\nlogs/*\n!logs/keep.txt\n/top.txt\n")
    touch(repo / "a.log")
    touch(repo / "main.py")
    touch(repo / "top.txt")
    touch(repo / "build" / "out.txt")
    touch(repo / "logs" / "x.txt")
    touch(repo / "logs" / "keep.txt")
    touch(repo / "sub" / ".gitignore", b"!important.log\nlocal.txt\n")
    touch(repo / "sub" / "important.log")
    touch(repo / "sub" / "other.log")
    touch(repo / "sub" / "local.txt")
    touch(repo / "sub" / "top.txt")  # '/top.txt' anchors to the repo top only
    touch(repo / "sub" / "build" / "x.txt")
    assert files(tmp_path) == [
        "repo/main.py",
        "repo/logs/keep.txt",
        "repo/sub/important.log",
        "repo/sub/top.txt",
    ]
    assert len(files(tmp_path, respect_gitignore=False, skip_hidden=False)) == 13


def test_gitignore_of_enclosing_repo_applies_to_a_root_inside_it(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    touch(repo / ".gitignore", b"*.tmp\n")
    touch(repo / "docs" / "a.md")
    touch(repo / "docs" / "b.tmp")
    assert files(repo / "docs") == ["a.md"]


def test_gitignore_outside_a_repo_and_nested_repo(tmp_path: Path) -> None:
    touch(tmp_path / ".gitignore", b"*.txt\n")
    touch(tmp_path / "a.txt")  # not in a repository: the file is only a file
    repo = _repo(tmp_path / "outer")
    touch(repo / ".gitignore", b"*.md\n")
    inner = _repo(repo / "inner")  # a nested repository has its own rules
    touch(inner / "x.md")
    touch(repo / "y.md")
    assert files(tmp_path) == ["a.txt", "outer/inner/x.md"]


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    touch(tmp_path / "a.md")
    touch(tmp_path / "b.txt")
    touch(tmp_path / "Downloads" / "c.md")
    touch(tmp_path / "deep" / "tmp" / "d.md")
    got = files(tmp_path, include=("*.md",), exclude=("Downloads/", "**/tmp"))
    assert got == ["a.md"]


def test_size_limit_and_media(tmp_path: Path) -> None:
    touch(tmp_path / "small.txt", b"x" * 10)
    touch(tmp_path / "big.txt", b"x" * 2000)
    touch(tmp_path / "movie.mp4", b"x" * 2000)  # media: name only, its own limit
    settings = IndexSettings(max_file_bytes=1000)
    assert files(tmp_path, settings) == ["movie.mp4", "small.txt"]
    (problem,) = problems(tmp_path, settings)
    assert problem.path.endswith("big.txt") and "size limit" in problem.reason
    assert not problem.is_dir


def test_symlinks_not_followed_by_default(tmp_path: Path) -> None:
    touch(tmp_path / "outside" / "secret.txt")
    root = tmp_path / "root"
    touch(root / "real.txt")
    os.symlink(tmp_path / "outside", root / "linkdir")
    os.symlink(tmp_path / "outside" / "secret.txt", root / "linkfile.txt")
    os.symlink(root / "nowhere", root / "broken.txt")
    assert files(root) == ["real.txt"]


def test_symlink_loop_terminates_and_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "a" / "f.txt")
    os.symlink(root, root / "a" / "loop")  # a -> root -> a -> ...
    os.symlink(root / "a", root / "b")  # a second path to the same folder
    os.symlink(root / "a" / "f.txt", root / "hard.txt")  # a second path to the same file
    os.symlink(root / "missing", root / "broken")
    got = files(root, follow_symlinks=True)
    assert len(got) == 1 and got[0] in ("a/f.txt", "hard.txt")  # the first path found wins


def test_followed_symlink_into_a_secret_store_is_skipped(tmp_path: Path) -> None:
    touch(tmp_path / ".ssh" / "id_rsa")
    touch(tmp_path / ".ssh" / "notes.txt")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / ".ssh", root / "stuff")
    os.symlink(tmp_path / ".ssh" / "notes.txt", root / "n.txt")
    assert files(root, follow_symlinks=True) == []


def test_non_utf8_name_round_trips(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9 \xff.txt")
    with open(raw, "wb") as f:
        f.write(b"hello")
    (item,) = walk([tmp_path], skip_dirs=())
    assert isinstance(item, FileEntry)
    assert os.fsencode(item.path) == raw  # surrogate escapes give the bytes back
    with open(item.path, "rb") as f:
        assert f.read() == b"hello"


def test_bytes_root(tmp_path: Path) -> None:
    touch(tmp_path / "a.txt")
    (item,) = walk([os.fsencode(tmp_path)], skip_dirs=())
    assert isinstance(item, FileEntry) and item.path == str(tmp_path / "a.txt")


def test_permission_denied_folder_is_a_problem_not_a_stop(tmp_path: Path, monkeypatch) -> None:
    touch(tmp_path / "a" / "x.txt")
    touch(tmp_path / "locked" / "y.txt")
    touch(tmp_path / "z" / "w.txt")
    locked = str(tmp_path / "locked")
    real_scandir = os.scandir

    def scandir(path):  # root can read any folder, so a denial is simulated
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = list(walk([tmp_path], skip_dirs=()))
    assert [os.path.basename(i.path) for i in items if isinstance(i, FileEntry)] == [
        "x.txt",
        "w.txt",
    ]
    (problem,) = [i for i in items if isinstance(i, WalkProblem)]
    assert problem == WalkProblem(locked, "permission denied", is_dir=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads every folder")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    touch(tmp_path / "locked" / "y.txt")
    touch(tmp_path / "ok.txt")
    os.chmod(tmp_path / "locked", 0)
    try:
        assert files(tmp_path) == ["ok.txt"]
        assert problems(tmp_path)[0].reason == "permission denied"
    finally:
        os.chmod(tmp_path / "locked", 0o755)


def test_files_and_folders_vanishing_mid_walk(tmp_path: Path) -> None:
    for name in "abcde":
        touch(tmp_path / f"{name}.txt")
    touch(tmp_path / "sub" / "s.txt")
    gen = walk([tmp_path], skip_dirs=())
    first = next(gen)
    assert first.path.endswith("a.txt")  # the folder is listed; now files disappear
    os.unlink(tmp_path / "c.txt")
    os.unlink(tmp_path / "sub" / "s.txt")
    os.rmdir(tmp_path / "sub")
    rest = [os.path.basename(i.path) for i in gen]
    assert rest == ["b.txt", "d.txt", "e.txt"]


def test_special_files_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path / "a.txt")
    os.mkfifo(tmp_path / "pipe")  # reading a FIFO would block the indexer
    assert files(tmp_path) == ["a.txt"]


def test_roots_missing_file_and_overlapping(tmp_path: Path) -> None:
    touch(tmp_path / "d" / "a.txt")
    single = touch(tmp_path / "single.txt")
    items = list(walk([tmp_path / "nope", single, tmp_path / "d", tmp_path], skip_dirs=()))
    assert items[0] == WalkProblem(str(tmp_path / "nope"), "root not found", is_dir=True)
    paths = [i.path for i in items[1:]]
    # tmp_path is walked after d: d is not walked twice.
    assert paths == [str(single), str(tmp_path / "d" / "a.txt"), str(single)]


def test_own_data_dirs_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path / "home" / "doc.txt")
    touch(tmp_path / "home" / "appdata" / "index" / "manifest.json")
    items = walk([tmp_path / "home"], skip_dirs=[tmp_path / "home" / "appdata"])
    assert [os.path.basename(i.path) for i in items] == ["doc.txt"]


def test_own_data_dirs_default_from_launcher_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "lh"))
    touch(tmp_path / "lh" / "data" / "index" / "manifest.json")
    touch(tmp_path / "lh" / "cache" / "x.bin")
    touch(tmp_path / "lh" / "notes.txt")
    items = walk([tmp_path / "lh"])
    assert [os.path.basename(i.path) for i in items] == ["notes.txt"]


# --- settings -------------------------------------------------------------------------


def test_settings_from_table() -> None:
    s = IndexSettings.from_table(
        {
            "roots": ["~/Documents"],
            "exclude": "*.tmp",
            "max_file_bytes": "20 MB",
            "chunk_tokens": 256,
            "commit_every_seconds": 10,
            "skip_hidden": False,
        }
    )
    assert s.roots == ("~/Documents",) and s.exclude == ("*.tmp",)
    assert s.max_file_bytes == 20_000_000 and s.chunk_tokens == 256
    assert s.commit_every_seconds == 10.0 and s.skip_hidden is False
    assert IndexSettings.from_table({}) == IndexSettings()


@pytest.mark.parametrize(
    "table, message",
    [
        ({"chunk_tokenz": 3}, "unknown key"),
        ({"skip_hidden": "yes"}, "true or false"),
        ({"chunk_tokens": 1.5}, "integer"),
        ({"include": [1]}, "list of strings"),
        ({"max_file_bytes": "lots"}, "cannot read size"),
        ({"chunk_overlap": 300, "chunk_tokens": 400}, "chunk_overlap"),
        ({"card_tokens": -1}, "negative"),
    ],
)
def test_settings_errors(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IndexSettings.from_table(table)


def test_parse_size() -> None:
    assert parse_size("123") == 123
    assert parse_size("1.5kb") == 1500
    assert parse_size("2 GiB") == 2 * 1024**3
    assert parse_size("50MB") == 50_000_000


def test_load_settings_reads_the_index_table(tmp_path: Path, monkeypatch) -> None:
    from launcher import paths
    from launcher.walk import load_settings

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path))
    assert load_settings() == IndexSettings()
    touch(paths.config_file(), b'[index]\nroots = ["/data"]\nmax_chunks = 8\n')
    s = load_settings()
    assert s.roots == ("/data",) and s.max_chunks == 8


def test_admitter_agrees_with_the_walk_on_every_path(tmp_path: Path) -> None:
    """A watcher batch is judged path by path (``Admitter``): every verdict, and every
    folder's files, must be what a full walk yields."""
    from launcher.walk import Admitter

    root = tmp_path / "root"
    touch(root / "keep.md")
    touch(root / ".hidden.txt")
    touch(root / "keys" / "id_ed25519")
    touch(root / "keys" / "notes.txt")
    touch(root / "big.txt", b"x" * 2000)
    touch(root / "proj" / "node_modules" / "lib" / "index.js")
    touch(root / "proj" / "env" / "pyvenv.cfg")
    touch(root / "proj" / "env" / "lib" / "site.py")
    touch(root / "repo" / ".git" / "HEAD")
    touch(root / "repo" / ".gitignore", b"*.log\nbuild/\n!keep.log\n")
    touch(root / "repo" / "app.log")
    touch(root / "repo" / "keep.log")
    touch(root / "repo" / "build" / "out.txt")
    touch(root / "repo" / "src" / ".gitignore", b"gen_*\n")
    touch(root / "repo" / "src" / "gen_a.py")
    touch(root / "repo" / "src" / "main.py")
    for i in range(30):
        touch(root / "many" / f"n{i:02d}.txt")
    settings = IndexSettings(max_file_bytes=1000, exclude=("many/n1*",))
    walked = {i.path: i for i in walk([root], settings, skip_dirs=()) if isinstance(i, FileEntry)}
    assert str(root / "repo" / "keep.log") in walked and str(root / "many" / "n05.txt") in walked
    admitter = Admitter([str(root)], settings)
    every = [os.path.join(d, n) for d, dirs, names in os.walk(root) for n in [*names, *dirs]]
    for path in sorted(every, reverse=True):  # deepest first: folders are listed on demand
        assert admitter.admit(path) == walked.get(path), path
        assert admit(path, [str(root)], settings) == walked.get(path), path
    for folder in (root, root / "repo", root / "many", root / "proj"):
        under = {e.path for e in Admitter([str(root)], settings).files_under(folder)}
        assert under == {p for p in walked if p.startswith(str(folder) + os.sep)}, folder
    assert admitter.admit(tmp_path / "elsewhere.txt") is None
    assert admitter.admit(root / "gone" / "x.txt") is None
