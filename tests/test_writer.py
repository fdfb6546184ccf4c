"""The index's writers taking turns: a running ``launch`` (its service, in a process of its
own) and CLI commands, in both orders; rebuild safety; the remembered model; run records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from waiting import wait_for

from launcher import paths
from launcher.app import App
from launcher.cli import main
from launcher.errors import StoreError
from launcher.query import Query
from launcher.service import LocalService
from launcher.store import LOCK, MANIFEST, REBUILD, Store, default_dir

REPO = Path(__file__).resolve().parents[1]

# The service exactly as ``launch`` builds it (watching, warm), without the web page:
# commands on stdin, one JSON answer per line on stdout.
SERVICE = r"""
import json, sys
from launcher.app import App
from launcher.service import LocalService
app = App.create()
svc = LocalService(app, watch=True, warm=True)
svc.ready.wait(120)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "quit":
        break
    if cmd == "indexed":
        out = {"indexed": svc.is_indexed(arg)}
    else:
        st = svc.status()
        out = {"files": st.files, "message": st.message,
               "roots": svc.watcher.roots if svc.watcher else []}
    print(json.dumps(out), flush=True)
svc.close()
app.close()
"""


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def cli(*argv: str, **kw) -> subprocess.Popen:
    script = "import sys; from launcher.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", script, *argv], env=env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


def run_cli(*argv: str, timeout: float = 300) -> tuple[int, str, str]:
    proc = cli(*argv)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


class Service:
    """The launch service in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVICE], env=env(), text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def ask(self, line: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, self.proc.stderr.read() if self.proc.stderr else "service died"
        return json.loads(answer)

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else "service died"
        assert json.loads(line)["ready"]

    def indexed(self, path: Path) -> bool:
        return bool(self.ask(f"indexed {path}")["indexed"])

    def close(self) -> str:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def tree(root: Path, n: int, word: str = "note") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"{word}{i:03d}.txt"
        p.write_text(
            f"{word} number {i} about " + " ".join(["rivers", "stones", "clouds"][: 1 + i % 3])
        )
        out.append(p)
    return out


def read_index() -> tuple[Store, dict[str, int]]:
    """The index on disk, checked whole: loads cleanly, every row owned once, unit rows."""
    store = Store.open(default_dir(), identity=None, dims=None, writable=False)
    store.close()
    assert store.recovered is None
    snap = store.snapshot()
    owners = [snap.row_owner(i) for i in range(len(snap))]
    assert len({(rec.path, ref.row) for rec, ref in owners}) == len(owners)
    m = snap.matrix().astype(np.float32)
    if len(m):
        assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=5e-3)
    return store, {rec.path: len(rec.rows) for rec in snap.files}


def all_embedded() -> bool:
    """Every file in the index has its vectors (none only queued by name)."""
    try:
        return all(read_index()[1].values())
    except StoreError:
        return False  # (read while a commit was replacing the files: look again)


def write_config(text: str) -> None:
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(text)


# -- launch and the CLI take turns ---------------------------------------------------


def test_cli_commands_work_while_launch_runs_and_its_watcher_writes(models_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tree(a, 5)
    tree(b, 20, "paper")
    assert run_cli("index", str(a))[0] == 0
    svc = Service()
    try:
        svc.ready()
        assert svc.ask("status")["roots"] == [str(a)]
        # the watcher writes (a stream of new files) while `index b` runs in another process
        fresh = []
        proc = cli("index", str(b), "--json")
        for i in range(12):
            p = a / f"fresh{i}.txt"
            p.write_text(f"fresh file {i} written while the CLI indexes")
            fresh.append(p)
            time.sleep(0.15)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert json.loads(out)["added"] >= 20  # and fresh files the watcher had not done yet
        assert wait_for(lambda: all(svc.indexed(p) for p in fresh)), (
            [p.name for p in fresh if not svc.indexed(p)],
            svc.ask("status"),
            svc.close(),
        )
        assert all(svc.indexed(p) for p in b.iterdir())  # the CLI's commits, followed
        # (a file is findable by name once queued; its vectors land with a later commit,
        # maybe in the next slice of the watcher's work)
        assert wait_for(all_embedded, timeout=120)
        _, files = read_index()
        assert set(files) == {str(p) for p in [*a.iterdir(), *b.iterdir()]}
        assert all(files.values())
        assert wait_for(lambda: sorted(svc.ask("status")["roots"]) == sorted([str(a), str(b)]))
        new_in_b = b / "later.txt"
        new_in_b.write_text("written after the CLI added this folder")
        assert wait_for(lambda: svc.indexed(new_in_b))  # it watches the root the CLI added

        code, _, err = run_cli("remove", str(b))
        assert code == 0, err
        assert wait_for(lambda: not svc.indexed(new_in_b))
        assert wait_for(lambda: svc.ask("status")["roots"] == [str(a)])

        code, _, err = run_cli("clear", "--yes")
        assert code == 0, err
        assert wait_for(lambda: "deleted" in svc.ask("status")["message"])
        (a / "after-clear.txt").write_text("the index is gone: launch does not bring it back")
        time.sleep(3)
        assert not default_dir().exists()

        code, _, err = run_cli("index", str(a))
        assert code == 0, err
        assert wait_for(lambda: svc.indexed(a / "after-clear.txt"))
        last = a / "last.txt"
        last.write_text("and the watcher writes again")
        assert wait_for(lambda: svc.indexed(last))
    finally:
        err = svc.close()
    assert "Traceback" not in err, err
    _, files = read_index()
    assert set(files) == {str(p) for p in a.iterdir()}


def test_launch_started_during_an_index_run_takes_over_when_it_ends(models_env, tmp_path):
    root = tmp_path / "docs"
    tree(root, 150)
    write_config("[index]\ncommit_every_files = 10\ncommit_every_seconds = 0.5\n")
    run = cli("index", str(root))
    try:
        # launch starts while the run holds the lock (it has committed its queue)
        assert wait_for(lambda: (default_dir() / MANIFEST).exists(), 120)
        holder = (default_dir() / LOCK).read_text().split()
        svc = Service()
        svc.ready()
        during = root / "during.txt"
        during.write_text("created while the other run was indexing")
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert run.pid == int(holder[0])
        assert wait_for(lambda: svc.indexed(during))  # the batch waited, then wrote
        after = root / "after.txt"
        after.write_text("created after the run ended")
        assert wait_for(lambda: svc.indexed(after))
        assert svc.ask("status")["files"] == 152
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        err = svc.close()
    assert "Traceback" not in err, err
    _, files = read_index()
    assert set(files) == {str(p) for p in root.iterdir()} and all(files.values())


def test_deleting_the_index_folder_under_launch(models_env, tmp_path):
    root = tmp_path / "docs"
    tree(root, 8)
    assert main(["index", str(root)]) == 0
    app = App.create()
    svc = LocalService(app, watch=True)
    try:
        assert svc.watcher is not None
        shutil.rmtree(default_dir())
        (root / "meanwhile.txt").write_text("a change while there is no index")
        assert wait_for(lambda: "deleted" in svc.status().message and svc.watcher is None, 20)
        assert svc.status().files == 0
        time.sleep(2)
        assert not default_dir().exists()  # not recreated behind the user's back
        assert main(["index", str(root)]) == 0  # a clean new index...
        assert wait_for(lambda: svc.watcher is not None, 20)  # ...that launch follows
        new = root / "new.txt"
        new.write_text("indexed by the watcher into the new index")
        assert wait_for(lambda: svc.is_indexed(str(new)), 30)
        assert svc.status().files == 10 and "deleted" not in svc.status().message
    finally:
        svc.close()
        app.close()
    _, files = read_index()  # whole: no generation names a segment of the deleted folder
    assert set(files) == {str(p) for p in root.iterdir()} and all(files.values())


# -- rebuild safety -------------------------------------------------------------------


def info_json(capsys) -> dict:
    capsys.readouterr()
    assert main(["info", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_rebuild_with_a_broken_model_leaves_the_index_as_it_was(models_env, tmp_path, capsys):
    root = tmp_path / "docs"
    tree(root, 6)
    assert main(["index", str(root)]) == 0
    before = info_json(capsys)
    data = Path(models_env.embedding).read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: int(len(data) * 0.7)])  # header intact, tensors cut short
    capsys.readouterr()
    assert main(["index", "--rebuild", "--model", str(broken)]) == 1
    assert "broken.gguf" in capsys.readouterr().err
    after = info_json(capsys)
    for key in ("files", "vectors", "model", "generation", "roots"):
        assert after[key] == before[key], key
    assert not after["rebuild_pending"]
    assert main(["search", "rivers", "--paths-only"]) == 0


def test_interrupted_rebuild_keeps_the_old_index_searchable_and_resumes(
    models_env, tmp_path, capsys
):
    from launcher import synth

    root = tmp_path / "docs"
    tree(root, 600)
    write_config("[index]\ncommit_every_files = 5\ncommit_every_seconds = 0.2\n")
    assert main(["index", str(root)]) == 0
    before = info_json(capsys)
    other = synth.write_text_model(tmp_path / "other.gguf", role="embedding", seed=99)
    proc = cli("index", "--rebuild", "--model", str(other))
    try:
        # killed mid-rebuild, as soon as it committed some of the new index (on a quiet
        # machine the rest takes about a second)
        assert wait_for(lambda: (default_dir() / REBUILD).exists(), 120, step=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    after = info_json(capsys)
    assert after["rebuild_pending"]
    for key in ("files", "vectors", "model"):
        assert after[key] == before[key], key
    capsys.readouterr()
    assert main(["search", "rivers", "--json"]) == 0  # the old index, with its own model
    assert json.loads(capsys.readouterr().out)["results"]
    code, _, err = run_cli("index", "--rebuild", "--model", str(other), "--json")
    assert code == 0, err
    assert "resuming" in err
    done = info_json(capsys)
    assert done["model"]["model_file"] == "other.gguf" and not done["rebuild_pending"]
    assert done["files"] == 600 and done["queued"] == 0
    _, files = read_index()
    assert set(files) == {str(p) for p in root.iterdir()} and all(files.values())


# -- the index remembers its model ----------------------------------------------------


def test_commands_use_the_model_the_index_was_built_with(tiny_models, tmp_path, capsys):
    own = tmp_path / "my-models"
    own.mkdir()
    model = Path(shutil.copy(tiny_models.embedding, own / "embed.gguf"))
    mmproj = Path(shutil.copy(tiny_models.mmproj, own / "proj.gguf"))
    root = tmp_path / "docs"
    tree(root, 4)
    assert main(["index", str(root), "--model", str(model), "--mmproj", str(mmproj)]) == 0
    # no flag, env var or config names a model: the index's own are used
    capsys.readouterr()
    assert main(["search", "rivers", "--paths-only"]) == 0
    assert capsys.readouterr().out.strip()
    with App.create() as app:
        assert app.models.model == model and app.models.mmproj == mmproj
        svc = LocalService(app, watch=False)
        assert svc.search(Query(text="rivers"))
        svc.close()
    assert main(["info"]) == 0
    assert str(model) in capsys.readouterr().out
    assert main(["index"]) == 0

    moved = tmp_path / "elsewhere.gguf"
    model.rename(moved)
    capsys.readouterr()
    assert main(["search", "rivers"]) == 1
    err = capsys.readouterr().err
    assert str(model) in err and "gone" in err
    moved.rename(model)

    from launcher import synth

    # same path, another model (other metadata, so another header)
    synth.write_text_model(model, role="embedding", seed=77, name="Other Embedding")
    assert main(["search", "rivers"]) == 1
    err = capsys.readouterr().err
    assert str(model) in err and "changed" in err


# -- run records ----------------------------------------------------------------------


def test_info_shows_the_last_run_even_when_it_changed_nothing(models_env, tmp_path, capsys):
    root = tmp_path / "docs"
    tree(root, 5)
    assert main(["index", str(root)]) == 0
    assert main(["index"]) == 0  # nothing to do: its final commit has nothing else to write
    run = info_json(capsys)["last_run"]
    assert run is not None and not run.get("interrupted")
    assert (run["seen"], run["unchanged"], run["indexed"]) == (5, 5, 0)
    assert main(["info"]) == 0
    assert "Last run:" in capsys.readouterr().out


def test_an_interrupted_run_is_recorded_with_its_counts(models_env, tmp_path, capsys, monkeypatch):
    from launcher import cli_index

    root = tmp_path / "docs"
    tree(root, 30)
    write_config("[index]\ncommit_every_files = 4\n")

    class CtrlC:
        """Ctrl+C as the 10th file's card comes up (the progress callback is on the
        indexing thread, where SIGINT's KeyboardInterrupt lands)."""

        fired = False

        def __call__(self, p) -> None:
            if p.phase == "cards" and p.done >= 10 and not self.fired:  # done moves by batches
                self.fired = True
                raise KeyboardInterrupt

        def close(self) -> None:  # as TerminalProgress: erase the line
            pass

    original = cli_index.TerminalProgress
    monkeypatch.setattr(cli_index, "TerminalProgress", CtrlC)
    capsys.readouterr()
    assert main(["index", str(root)]) == 130
    assert "run `index` again" in capsys.readouterr().err
    info = info_json(capsys)
    run = info["last_run"]
    assert run["interrupted"] and run["seen"] == 30
    assert 0 < run["indexed"] < 30 and run["queued"] == info["queued"] > 0
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "interrupted" in out and "run `launcher.py index` again" in out
    monkeypatch.setattr(cli_index, "TerminalProgress", original)
    assert main(["index"]) == 0
    run = info_json(capsys)["last_run"]
    assert not run["interrupted"] and run["queued"] == 0


def test_launch_reuses_its_writer_only_while_nobody_else_committed(models_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tree(a, 3)
    tree(b, 3, "paper")
    assert main(["index", str(a)]) == 0
    app = App.create()
    svc = LocalService(app, watch=False)
    try:
        (a / "one.txt").write_text("first change")
        svc.apply_changes([str(a / "one.txt")])
        first = svc._writer
        (a / "two.txt").write_text("second change")
        svc.apply_changes([str(a / "two.txt")])
        assert first is not None and svc._writer is first  # not read again from disk
        assert main(["index", str(b)]) == 0  # another process commits in between...
        (a / "three.txt").write_text("third change")
        svc.apply_changes([str(a / "three.txt")])
        assert svc._writer is not first  # ...so the next write starts from the disk
        assert svc.is_indexed(str(b / "paper000.txt"))
    finally:
        svc.close()
        app.close()
    _, files = read_index()  # nothing the other process committed was lost
    assert set(files) == {str(p) for p in [*a.iterdir(), *b.iterdir()]} and all(files.values())
