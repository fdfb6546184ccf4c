"""Find the files worth indexing under the roots, and the index settings that steer it.

``walk()`` is a generator over ``FileEntry`` (a regular file to index) and ``WalkProblem``
(a folder or file that could not be read, or a file over the size limit). It never raises
for a single path: permission errors, files vanishing mid-walk and undecodable names
(kept as ``str`` with surrogate escapes, as ``os.fsdecode`` gives them) are all survived.

Skipped silently by default: hidden names, VCS folders, dependency and cache folders
(``node_modules``, virtualenvs found by their ``pyvenv.cfg``, ``CACHEDIR.TAG`` caches...),
key and secret stores (always, whatever the settings), what a git repository's
``.gitignore`` files exclude, special files (FIFOs would block a reader), symlinks unless
``follow_symlinks``, and the app's own data, cache and log folders.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

# Folders never entered: key, password and credential stores (matched case-insensitively).
SECRET_DIRS = frozenset(
    {
        ".ssh", ".gnupg", ".gpg", ".password-store", "keyrings", "keychains", ".aws",
        ".azure", ".kube", ".docker", ".pki", ".gcloud", "gcloud", ".vault", ".1password",
        ".keepass", ".local-keys", ".certs", ".secrets", "secrets",
    }
)  # fmt: skip
# Files never read: private keys, key stores, credential files (fnmatch on the lowered name).
SECRET_FILES = (
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx",
    "*.keystore", "*.jks", "*.kdbx", "*.kdb", "*.keychain", "*.keychain-db", ".netrc",
    "_netrc", ".pgpass", ".env", ".env.*", ".git-credentials", "credentials",
    "credentials.json", "secring.*", "*.ovpn", ".htpasswd", "*.gpg",
)  # fmt: skip
# Folders skipped when ``default_excludes`` is on: VCS, dependencies, caches, build outputs.
DEFAULT_SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", "node_modules",
        "bower_components", "jspm_packages", "__pycache__", ".venv", "site-packages",
        ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
        ".gradle", ".next", ".nuxt", ".parcel-cache", ".terraform", ".cache", ".npm",
        ".pnpm-store", ".yarn", ".eggs", ".stack-work", "_build", "DerivedData", "Pods",
        ".Trash", ".Trashes", "$RECYCLE.BIN", "System Volume Information", "lost+found",
        ".Spotlight-V100", ".fseventsd", ".DocumentRevisions-V100",
    }
)  # fmt: skip
DEFAULT_SKIP_DIR_GLOBS = ("*.egg-info", ".Trash-*")
DEFAULT_SKIP_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"})
# A folder holding one of these is a virtualenv, conda env or tagged cache: skipped whole.
MARKER_FILES = ("pyvenv.cfg", "conda-meta")
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"

# Content is never read from these (name-only cards), so they get their own size limit.
MEDIA_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg",
        ".3gp", ".mts", ".m2ts", ".ts", ".mp3", ".m4a", ".flac", ".wav", ".ogg", ".opus",
        ".aac", ".wma", ".aiff", ".aif",
    }
)  # fmt: skip

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class IndexSettings:
    """The ``[index]`` table of the config file; every field has a working default.

    Patterns in ``include`` / ``exclude`` are gitignore-style (``*.log``, ``Downloads/``,
    ``/top-only``, ``**/tmp``, ``!keep.txt``), matched against the path relative to its root.
    An empty ``include`` means every file; otherwise a file must match one of them.
    """

    roots: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_hidden: bool = True
    default_excludes: bool = True
    respect_gitignore: bool = True
    follow_symlinks: bool = False
    max_file_bytes: int = 50 * 1000 * 1000
    max_media_bytes: int = 64 * 1000**4  # video/audio: only the name is indexed
    max_text_bytes: int = 4 * 1000 * 1000  # text read past this is not indexed
    max_image_pixels: int = 100_000_000  # decompression-bomb guard
    # Images are decoded at most this large (memory); the engine then resizes them exactly
    # as the official pipeline does, so this must stay above its ~1.8 Mpixel target.
    image_max_side: int = 2048
    # How much detail the model sees of each picture (see IMAGE_PROFILES): the cost of an
    # image grows with its tokens, so on a CPU this is the main speed/quality trade-off.
    image_profile: str = "balanced"
    card_tokens: int = 160
    chunk_tokens: int = 448
    chunk_overlap: int = 64
    max_chunks: int = 64  # per file, images of PDF pages included
    pdf_render_min_chars: int = 200  # a PDF page with less text is embedded as an image
    pdf_render_px: int = 1024  # longer side of a rendered PDF page
    max_rendered_pages: int = 16
    video_frames: int = 4  # frames read from a video, evenly spread (0: name only)
    # Reading one file (not embedding it) may take this long before it is abandoned as
    # "too slow" (0: no limit); `index --retry-failed` retries such files without it.
    max_seconds_per_file: float = 120.0
    commit_every_files: int = 64
    commit_every_seconds: float = 30.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> IndexSettings:
        """Build from a parsed TOML table; unknown keys and wrong types raise ``ConfigError``."""
        defaults = cls()
        values: dict[str, Any] = {}
        for key, raw in table.items():
            if key not in _FIELD_NAMES:
                known = ", ".join(sorted(_FIELD_NAMES))
                raise ConfigError(f"[index] unknown key {key!r} (known keys: {known})")
            values[key] = _coerce(key, raw, getattr(defaults, key))
        settings = dataclasses.replace(defaults, **values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ``ConfigError`` for values that cannot work together."""
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"[index] {name} must not be negative (got {value})")
        if self.chunk_tokens < 16 or self.card_tokens < 8:
            raise ConfigError("[index] chunk_tokens must be >= 16 and card_tokens >= 8")
        if self.chunk_overlap >= self.chunk_tokens // 2:
            raise ConfigError("[index] chunk_overlap must be less than half of chunk_tokens")
        if self.max_chunks < 1 or self.commit_every_files < 1:
            raise ConfigError("[index] max_chunks and commit_every_files must be at least 1")
        if self.image_profile not in IMAGE_PROFILES:
            names = ", ".join(IMAGE_PROFILES)
            raise ConfigError(f"[index] image_profile must be one of {names}")

    @property
    def image_pixel_budget(self) -> int:
        """The pixel budget of the image profile (32x32 pixels per image token)."""
        return IMAGE_PROFILES[self.image_profile] * 32 * 32


# Image tokens at most per picture, by profile. "max" is the official bound (1800 tokens,
# ~1.8 Mpixel); "balanced" (~512x512) keeps text in screenshots and scans legible at a
# seventh of the cost; "fast" (~256x256) is enough for photos by their subject.
IMAGE_PROFILES = {"fast": 64, "balanced": 256, "max": 1800}


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(IndexSettings))


def _coerce(key: str, raw: Any, default: Any) -> Any:
    """Check one TOML value against the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"[index] {key} must be true or false (got {raw!r})")
    if isinstance(default, tuple):
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ConfigError(f"[index] {key} must be a list of strings (got {raw!r})")
    if isinstance(default, int):
        if key.endswith("_bytes") and isinstance(raw, str):
            return parse_size(raw, key)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ConfigError(f"[index] {key} must be an integer (got {raw!r})")
    if isinstance(default, float):
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        raise ConfigError(f"[index] {key} must be a number (got {raw!r})")
    if isinstance(default, str):
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"[index] {key} must be a string (got {raw!r})")
    raise AssertionError(f"unhandled settings type for {key}")  # pragma: no cover


def parse_size(text: str, key: str = "size") -> int:
    """``"50 MB"`` -> 50_000_000, ``"2GiB"`` -> 2 * 1024**3, ``"123"`` -> 123."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f'[index] {key}: cannot read size {text!r} (try "50 MB")')
    number, unit, binary = m.groups()
    base = 1024 if binary else 1000
    power = " kmgt".index(unit.lower() or " ")
    return int(float(number) * base**power)


def load_settings() -> IndexSettings:
    """The ``[index]`` table of the user's config file, or defaults when there is none."""
    from .config import load_config

    return IndexSettings.from_table(load_config().table("index"))


@dataclass(frozen=True)
class FileEntry:
    """A regular file to index. ``path`` is absolute; undecodable bytes are surrogate-escaped."""

    path: str
    size: int
    mtime_ns: int
    root: str


@dataclass(frozen=True)
class WalkProblem:
    """A path the walk could not read or chose to leave out, with a short reason.

    ``is_dir`` problems matter to mark-and-sweep: the index keeps what it has under an
    unreadable folder or a missing root (an unplugged drive must not empty the index).
    """

    path: str
    reason: str
    is_dir: bool = False


def walk(
    roots: Iterable[str | os.PathLike[str] | bytes],
    settings: IndexSettings | None = None,
    *,
    skip_dirs: Iterable[str | os.PathLike[str]] | None = None,
) -> Iterator[FileEntry | WalkProblem]:
    """Yield the files to index under ``roots`` in a stable (sorted, depth-first) order.

    ``skip_dirs`` are folders never entered; by default the app's data, cache and log
    folders (so the index never indexes itself).
    """
    walker = _Walker(settings or IndexSettings(), _own_dirs() if skip_dirs is None else skip_dirs)
    for root in roots:
        yield from walker.walk_root(root)


def _own_dirs() -> list[str]:
    from . import paths

    return [str(p) for p in (paths.data_dir(), paths.cache_dir(), paths.log_dir())]


# One regular expression for all of them: this runs for every file of every walk.
_SECRET_FILE_RE = re.compile("|".join(fnmatch.translate(p) for p in SECRET_FILES))


def _is_secret_file(name: str) -> bool:
    return _SECRET_FILE_RE.match(name.lower()) is not None


def _is_secret_dir(name: str) -> bool:
    return name.lower() in SECRET_DIRS


def _is_hidden(name: str, entry: os.DirEntry[str]) -> bool:
    if name.startswith("."):
        return True
    if os.name != "nt":
        return False
    attrs = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
    return bool(attrs & getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 0))


def _pattern_spec(lines: Iterable[str]):
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(list(lines))


@dataclass(frozen=True)
class _IgnoreLayer:
    """The patterns of one ``.gitignore`` (or ``.git/info/exclude``), relative to ``base``."""

    base: str
    spec: Any  # pathspec.GitIgnoreSpec


def _read_ignore_file(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            data = f.read(1_000_000)
    except OSError:  # unreadable .gitignore: walk as if it were absent
        return []
    return data.decode("utf-8", "surrogateescape").splitlines()


def _ignore_layer(base: str, file: str) -> _IgnoreLayer | None:
    lines = _read_ignore_file(file)
    return _IgnoreLayer(base, _pattern_spec(lines)) if any(s.strip() for s in lines) else None


def _ignored(layers: tuple[_IgnoreLayer, ...], path: str, is_dir: bool) -> bool:
    """Git's rule: the deepest ``.gitignore`` with a matching pattern decides, last match wins."""
    for layer in reversed(layers):
        rel = path[len(layer.base) + 1 :].replace(os.sep, "/")
        result = layer.spec.check_file(rel + "/" if is_dir else rel)
        if result.include is not None:
            return bool(result.include)
    return False


def _repo_layers(root: str) -> tuple[_IgnoreLayer, ...] | None:
    """Ignore layers that apply at ``root`` from an enclosing repository, or None outside one."""
    chain = [root]
    parent = os.path.dirname(root)
    while parent != chain[-1]:
        chain.append(parent)
        parent = os.path.dirname(parent)
    for i, folder in enumerate(chain):
        if os.path.lexists(os.path.join(folder, ".git")):
            layers: list[_IgnoreLayer] = []
            exclude = _ignore_layer(folder, os.path.join(folder, ".git", "info", "exclude"))
            if exclude:
                layers.append(exclude)
            # .gitignore files from the repository top down to the root's parent; the
            # root's own one is read when the walk lists it.
            for sub in reversed(chain[1 : i + 1]):
                layer = _ignore_layer(sub, os.path.join(sub, ".gitignore"))
                if layer:
                    layers.append(layer)
            return tuple(layers)
    return None


class _Walker:
    def __init__(self, settings: IndexSettings, skip_dirs: Iterable[str | os.PathLike[str]]):
        self.s = settings
        self.exclude = _pattern_spec(settings.exclude) if settings.exclude else None
        self.include = _pattern_spec(settings.include) if settings.include else None
        self.visited_dirs: set[tuple[int, int]] = set()
        self.visited_files: set[tuple[int, int]] = set()
        self.skip_ids: set[tuple[int, int]] = set()
        for d in skip_dirs:
            try:
                st = os.stat(d)
            except OSError:
                continue
            self.skip_ids.add((st.st_dev, st.st_ino))

    # -- decisions -------------------------------------------------------------------------

    def _user_excluded(self, rel: str, is_dir: bool) -> bool:
        if self.exclude is None:
            return False
        return bool(self.exclude.match_file(rel + "/" if is_dir else rel))

    def _default_skip_dir(self, name: str) -> bool:
        if not self.s.default_excludes:
            return False
        return name in DEFAULT_SKIP_DIRS or any(
            fnmatch.fnmatchcase(name, g) for g in DEFAULT_SKIP_DIR_GLOBS
        )

    def _marked_skip(self, path: str, names: set[str]) -> bool:
        """A virtualenv, conda env or a cache that tags itself (CACHEDIR.TAG spec)."""
        if not self.s.default_excludes:
            return False
        if any(m in names for m in MARKER_FILES):
            return True
        if CACHEDIR_TAG in names:
            try:
                with open(os.path.join(path, CACHEDIR_TAG), "rb") as f:
                    return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
            except OSError:
                return False
        return False

    def _size_limit(self, name: str) -> int:
        ext = os.path.splitext(name)[1].lower()
        return self.s.max_media_bytes if ext in MEDIA_EXTENSIONS else self.s.max_file_bytes

    def _link_target_is_secret(self, path: str) -> bool:
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        return any(_is_secret_dir(p) for p in parts) or _is_secret_file(parts[-1])

    # -- walking ---------------------------------------------------------------------------

    def walk_root(self, root: str | os.PathLike[str] | bytes) -> Iterator[FileEntry | WalkProblem]:
        root = os.path.abspath(os.path.expanduser(os.fsdecode(root)))
        try:
            st = os.stat(root)
        except FileNotFoundError:
            yield WalkProblem(root, "root not found", is_dir=True)
            return
        except OSError as err:
            yield WalkProblem(root, _reason(err), is_dir=True)
            return
        if stat.S_ISREG(st.st_mode):
            entry = self._file_entry(root, os.path.basename(root), st, root)
            if entry is not None:
                yield entry
            return
        if not stat.S_ISDIR(st.st_mode):
            yield WalkProblem(root, "root is not a file or folder", is_dir=True)
            return
        if (st.st_dev, st.st_ino) in self.visited_dirs:
            return  # nested in (or equal to) a root already walked
        self.visited_dirs.add((st.st_dev, st.st_ino))
        layers = _repo_layers(root) if self.s.respect_gitignore else None
        # Depth-first with an explicit stack: deep trees must not hit the recursion limit.
        stack: list[tuple[str, tuple[_IgnoreLayer, ...] | None]] = [(root, layers)]
        while stack:
            folder, layers = stack.pop()
            subdirs: list[tuple[str, tuple[_IgnoreLayer, ...] | None]] = []
            yield from self._scan(root, folder, layers, subdirs)
            stack.extend(reversed(subdirs))

    def _list(
        self, root: str, folder: str, layers: tuple[_IgnoreLayer, ...] | None
    ) -> tuple[list[os.DirEntry[str]], tuple[_IgnoreLayer, ...] | None] | WalkProblem | None:
        """A folder's entries (sorted by name) and the ignore layers that apply inside it;
        None when it vanished or is skipped whole (a virtualenv, a tagged cache)."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return None  # vanished or replaced since its parent was listed
        except OSError as err:
            return WalkProblem(folder, _reason(err), is_dir=True)
        names = {e.name for e in entries}
        if folder != root and self._marked_skip(folder, names):
            return None
        if self.s.respect_gitignore:
            if ".git" in names:  # a repository (or a nested one) starts here
                layers = ()
                exclude = _ignore_layer(folder, os.path.join(folder, ".git", "info", "exclude"))
                if exclude:
                    layers = (exclude,)
            if layers is not None and ".gitignore" in names:
                layer = _ignore_layer(folder, os.path.join(folder, ".gitignore"))
                if layer:
                    layers = (*layers, layer)
        return entries, layers

    def _scan(
        self,
        root: str,
        folder: str,
        layers: tuple[_IgnoreLayer, ...] | None,
        subdirs: list[tuple[str, tuple[_IgnoreLayer, ...] | None]],
    ) -> Iterator[FileEntry | WalkProblem]:
        listing = self._list(root, folder, layers)
        if listing is None or isinstance(listing, WalkProblem):
            if listing is not None:
                yield listing
            return
        entries, layers = listing
        for entry in entries:
            item = self._look(root, entry, layers, subdirs)
            if item is not None:
                yield item

    def _look(
        self,
        root: str,
        entry: os.DirEntry[str],
        layers: tuple[_IgnoreLayer, ...] | None,
        subdirs: list[tuple[str, tuple[_IgnoreLayer, ...] | None]],
    ) -> FileEntry | WalkProblem | None:
        try:
            return self._visit(root, entry, layers, subdirs, self.s.follow_symlinks)
        except (FileNotFoundError, NotADirectoryError):
            return None  # vanished between listing and looking
        except OSError as err:
            return WalkProblem(entry.path, _reason(err))

    def _visit(
        self,
        root: str,
        entry: os.DirEntry[str],
        layers: tuple[_IgnoreLayer, ...] | None,
        subdirs: list[tuple[str, tuple[_IgnoreLayer, ...] | None]],
        follow: bool,
    ) -> FileEntry | WalkProblem | None:
        name, path = entry.name, entry.path
        if self.s.skip_hidden and _is_hidden(name, entry):
            return None
        is_link = entry.is_symlink()
        if is_link and not follow:
            return None
        rel = path[len(root) + 1 :].replace(os.sep, "/")
        if entry.is_dir(follow_symlinks=follow):
            if _is_secret_dir(name) or self._default_skip_dir(name):
                return None
            if layers and _ignored(layers, path, True):
                return None
            if self._user_excluded(rel, True):
                return None
            st = entry.stat(follow_symlinks=follow)
            key = (st.st_dev, st.st_ino)
            if key in self.visited_dirs or key in self.skip_ids:
                return None  # a symlink loop, a second path to a folder, or our own data
            if is_link and self._link_target_is_secret(path):
                return None
            self.visited_dirs.add(key)
            subdirs.append((path, layers))
            return None
        if not entry.is_file(follow_symlinks=follow):
            return None  # FIFO, socket, device, broken symlink
        if _is_secret_file(name) or (self.s.default_excludes and name in DEFAULT_SKIP_FILES):
            return None
        if layers and _ignored(layers, path, False):
            return None
        if self._user_excluded(rel, False):
            return None
        if self.include is not None and not self.include.match_file(rel):
            return None
        if is_link and self._link_target_is_secret(path):
            return None
        st = entry.stat(follow_symlinks=follow)
        if follow:
            key = (st.st_dev, st.st_ino)
            if key in self.visited_files:
                return None
            self.visited_files.add(key)
        return self._file_entry(path, name, st, root)

    def _file_entry(
        self, path: str, name: str, st: os.stat_result, root: str
    ) -> FileEntry | WalkProblem | None:
        if not stat.S_ISREG(st.st_mode):
            return None
        limit = self._size_limit(name)
        if st.st_size > limit:
            return WalkProblem(path, f"larger than the size limit ({human_size(limit)})")
        return FileEntry(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, root=root)


def _reason(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "permission denied"
    return (err.strerror or type(err).__name__).lower()


def human_size(n: int) -> str:
    """``50000000`` -> ``50 MB`` (decimal units, as the config file's sizes)."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "file")`` -> ``1 file``, ``plural(1200, "file")`` -> ``1,200 files``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


_Layers = tuple[_IgnoreLayer, ...] | None
_Listing = tuple[dict[str, os.DirEntry[str]], _Layers]


class Admitter:
    """The walker's verdicts on many paths at once (a watcher batch). Each folder on the
    way to them is listed once and only the entries asked about are looked at, so a burst
    of 10,000 files in one folder costs one listing, not 10,000."""

    def __init__(self, roots: Iterable[str], settings: IndexSettings | None = None) -> None:
        self.roots = [os.path.abspath(os.path.expanduser(r)) for r in roots]
        self.settings = settings or IndexSettings()
        self._walker = _Walker(self.settings, _own_dirs())
        self._folders: dict[str, _Listing | None] = {}
        self._looked: dict[str, tuple[FileEntry | WalkProblem | None, _Layers, bool]] = {}

    def _root_of(self, target: str) -> str | None:
        candidates = [
            r for r in self.roots if target == r or target.startswith(r.rstrip(os.sep) + os.sep)
        ]
        return max(candidates, key=len) if candidates else None

    def admit(self, path: str | os.PathLike[str]) -> FileEntry | None:
        """The ``FileEntry`` a run would yield for ``path``, or None (outside the roots,
        ignored, hidden, too large, not a file, or gone)."""
        target = os.path.abspath(os.fspath(path))
        root = self._root_of(target)
        if root is None:
            return None
        if target == root:
            walker = _Walker(self.settings, _own_dirs())
            found = list(walker.walk_root(root))
            return found[0] if len(found) == 1 and isinstance(found[0], FileEntry) else None
        listing = self._folder(root, os.path.dirname(target))
        if listing is None:
            return None
        item = self._entry(root, listing, target)[0]
        return item if isinstance(item, FileEntry) else None

    def files_under(self, path: str | os.PathLike[str]) -> Iterator[FileEntry]:
        """Every file a run would index under ``path`` when it is an admitted folder (a
        folder moved in, or a folder rescanned); nothing otherwise."""
        target = os.path.abspath(os.fspath(path))
        root = self._root_of(target)
        if root is None:
            return
        stack = [target]
        while stack:
            folder = stack.pop()
            listing = self._folder(root, folder)
            if listing is None:
                continue
            subdirs = []
            for name in listing[0]:
                child = os.path.join(folder, name)
                item, _, is_dir = self._entry(root, listing, child)
                if isinstance(item, FileEntry):
                    yield item
                elif is_dir:
                    subdirs.append(child)
            stack.extend(reversed(subdirs))

    def _folder(self, root: str, folder: str) -> _Listing | None:
        """A folder's listing and ignore layers, if the walk would enter it."""
        chain = []
        while folder not in self._folders:
            chain.append(folder)
            if folder == root:
                break
            parent = os.path.dirname(folder)
            if parent == folder or not folder.startswith(root):
                return None
            folder = parent
        for step in reversed(chain):  # top down: a folder's layers come from its parent
            listing: _Listing | None = None
            if step == root:
                layers = _repo_layers(root) if self.settings.respect_gitignore else None
                entered = True
            else:
                parent_listing = self._folders[os.path.dirname(step)]
                entered = False
                if parent_listing is not None:
                    _, layers, entered = self._entry(root, parent_listing, step)
            if entered:
                found = self._walker._list(root, step, layers)
                if found is not None and not isinstance(found, WalkProblem):
                    listing = ({e.name: e for e in found[0]}, found[1])
            self._folders[step] = listing
        return self._folders[folder if not chain else chain[0]]

    def _entry(
        self, root: str, listing: _Listing, path: str
    ) -> tuple[FileEntry | WalkProblem | None, _Layers, bool]:
        """The walker's look at one entry of a listed folder, once: (what it yields, the
        layers inside it, whether it is a folder the walk enters)."""
        if path not in self._looked:
            entries, layers = listing
            entry = entries.get(os.path.basename(path))
            result: tuple[FileEntry | WalkProblem | None, _Layers, bool] = (None, None, False)
            if entry is not None:
                subdirs: list[tuple[str, _Layers]] = []
                item = self._walker._look(root, entry, layers, subdirs)
                result = (item, subdirs[0][1], True) if subdirs else (item, None, False)
            self._looked[path] = result
        return self._looked[path]


def admit(
    path: str | os.PathLike[str], roots: Iterable[str], settings: IndexSettings | None = None
) -> FileEntry | None:
    """The walker's verdict on one path (see ``Admitter``)."""
    return Admitter(roots, settings).admit(path)
