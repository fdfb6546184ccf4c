"""The embedding engine on an inference server: llama.cpp's ``llama-server`` or vLLM.

The prompt (official template and instruction, ``prompt.py``) and the image preprocessing
(``images.prepare_image``: smart_resize, bicubic) stay here; the server receives the same
prompt and pixels the local engine would use, and only runs the model:

* **llama-server** (``--embeddings --pooling last``): a text-only input goes as token ids,
  tokenized by the server's own ``/tokenize`` part by part exactly as ``engine.py`` does
  locally (template with special tokens parsed, content without), so file content can
  never end the turn and the vectors match the local engine's. An input with images goes
  as ``{"prompt_string", "multimodal_data": [PNG...]}`` with the server's media marker where
  the images are; the PNGs are already at their final size (the server's own resize is a
  no-op when started with ``--image-min-tokens 4 --image-max-tokens 1800``). That string is
  parsed with special tokens, so special-token look-alikes in the content are broken up
  (``neutralize``) and cannot end the turn either.
* **vLLM** (``--runner pooling``, OpenAI-compatible): ``/v1/embeddings`` with chat
  ``messages`` (system instruction; user images as data-URL PNGs, then the text), rendered
  by the model's own chat template into the official prompt, as the official code does.
  Checked against vLLM's documented API only (it cannot run here).

Requests are batched and several are kept in flight. Network errors, timeouts, HTTP 429
and 5xx are retried with backoff; an input the server refuses (4xx) is that input's
``InputError``; when the server stays unreachable, each input fails with
``EngineUnavailable`` (the indexer records it per file and the next run retries those).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import images as img
from .. import prompt
from ..embedder import ModelIdentity, _finish, model_identity, stack_vectors
from ..engine import DEFAULT_MAX_TOKENS, run_len, tokenize_parts
from ..errors import (
    ENGINE_UNAVAILABLE,
    EngineUnavailable,
    EngineUnreachable,
    InputError,
    LauncherError,
    MmprojRequired,
)
from ..inputs import EmbedInput
from . import EngineSettings

log = logging.getLogger("launcher")

LLAMA_SERVER = "llama-server"
VLLM = "vllm"
BACKOFF = 0.5  # seconds before the first retry; doubles each time (capped at 8 s)
PROBE_TEXT = "launcher engine check"
TOKEN_CACHE = 4096  # texts whose token ids are kept (extraction counts the same text twice)
_SPECIAL_LOOKALIKE = re.compile(r"<\|(?=[A-Za-z0-9_]{1,64}\|>)")
_BREAK = "\u200b"  # zero-width space: splits "<|im_end|>" so it is no longer a special token


def neutralize(text: str, marker: str | None = None) -> str:
    """Content that will be tokenized with special tokens parsed: ``<|name|>`` look-alikes
    (and the server's media marker) are broken with a zero-width space, so a file cannot
    end the turn or add an image. Text without them is unchanged."""
    text = _SPECIAL_LOOKALIKE.sub("<" + _BREAK + "|", text)
    if marker and marker in text:
        text = text.replace(marker, marker[:1] + _BREAK + marker[1:])
    return text


def png_base64(image: img.PreparedImage) -> str:
    """The prepared pixels as a lossless PNG, base64 (what the server decodes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (image.width, image.height), image.rgb).save(
        buf, format="PNG", compress_level=1
    )
    return base64.b64encode(buf.getvalue()).decode("ascii")


class _Refused(Exception):
    """The server answered with a 4xx: this request (input) is not acceptable."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class _ServerError(Exception):
    """The server answered 5xx, 408 or 429 (``status``; 0: an answer that is not JSON)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _Http:
    """JSON over HTTP(S), one keep-alive connection per thread, retries with backoff."""

    def __init__(self, url: str, key: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LauncherError(f"not an http(s) URL: {url}")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def once(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """One request; raises OSError/HTTPException (network), _Refused (4xx) or
        _ServerError (5xx)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        conn = self._conn(timeout or self.timeout)
        try:
            conn.request(method, self.prefix + path, body=data, headers=self.headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self._drop()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self._drop()
        if resp.status >= 500 or resp.status in (408, 429):
            raise _ServerError(f"HTTP {resp.status}: {_message(raw)}", resp.status)
        if resp.status >= 400:
            raise _Refused(resp.status, _message(raw))
        try:
            return json.loads(raw)
        except ValueError as err:
            raise _ServerError(f"not JSON from {self.url}{path}: {err}") from None

    def request(
        self, method: str, path: str, body: Any = None, *, tries: int, timeout: float | None = None
    ) -> Any:
        """``once`` with retries of network errors and 5xx/429; the last failure is raised
        as it was (``_Refused`` at once)."""
        delay = BACKOFF
        for attempt in range(tries):
            try:
                return self.once(method, path, body, timeout)
            except (OSError, http.client.HTTPException, _ServerError) as err:
                if attempt + 1 >= tries:
                    raise
                log.info("engine %s%s: %s; retrying in %.1f s", self.url, path, err, delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._drop()


def _message(raw: bytes) -> str:
    """The error message of a llama-server / OpenAI-style error body (else the text)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if "detail" in data:
            return str(data["detail"])[:300]
    return str(data)[:300]


@dataclass(frozen=True)
class ServerInfo:
    """What the server said about itself when we connected."""

    kind: str  # LLAMA_SERVER | VLLM
    model: str  # llama-server: the GGUF path on the server; vLLM: the served model name
    vision: bool
    slots: int
    max_tokens: int  # what one input may take (the slot's context, capped at the official 8192)
    media_marker: str | None = None
    details: str = ""  # model facts for the identity when the file is not readable here


class RemoteEmbedder:
    """Embeds on a llama-server or vLLM server; the same interface as ``Embedder``.

    Thread-safe: ``fork()`` returns the same object (queries and indexing may share it).
    """

    def __init__(
        self,
        settings: EngineSettings,
        *,
        instruction: str | None = None,
        min_pixels: int = img.MIN_PIXELS,
        max_pixels: int = img.MAX_PIXELS,
        mmproj_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.url
        self.instruction = prompt.normalize_instruction(instruction, prompt.DEFAULT_INSTRUCTION)
        self.min_pixels = min_pixels
        self.max_pixels = max(min_pixels, min(max_pixels, img.MAX_PIXELS))
        self._mmproj_name = mmproj_name
        self._http = _Http(settings.url.removesuffix("/v1"), settings.key, settings.timeout)
        self._tokens: OrderedDict[tuple[str, bool], list[int]] = OrderedDict()
        self._tokens_lock = threading.Lock()
        self._down = threading.Event()  # unreachable: one try per request until it answers
        self.info = self._connect()
        if self.info.kind == LLAMA_SERVER:
            self._check_specials()
        self.concurrency = settings.concurrency or self.info.slots
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="engine")
        try:
            probe = self.embed([PROBE_TEXT])[0]
        except LauncherError as err:
            self.close()
            raise EngineUnreachable(
                f"the engine at {self.url} cannot embed: {err} (llama-server needs "
                "--embeddings --pooling last)"
            ) from None
        self._dim = int(probe.shape[0])

    # -- connecting -------------------------------------------------------------------

    def _connect(self) -> ServerInfo:
        """Ask the server what it is (llama-server's /props, else vLLM's /v1/models); a
        server that does not answer is a clear error here, before any work starts."""
        tries = max(2, min(self.settings.retries, 4))
        try:
            try:
                props = self._http.request("GET", "/props", tries=tries, timeout=30)
            except _Refused:
                props = None  # not llama-server (vLLM has no /props)
            models = self._http.request("GET", "/v1/models", tries=tries, timeout=30)
        except (OSError, http.client.HTTPException, _ServerError) as err:
            raise EngineUnreachable(
                f"cannot reach the engine at {self.url} ({err}); is the server running? "
                "(LAUNCHER_README.md, 'Engines'); or use the local engine: --engine local"
            ) from None
        except _Refused as err:
            hint = " (set $LAUNCHER_ENGINE_KEY)" if err.status in (401, 403) else ""
            raise EngineUnreachable(f"the engine at {self.url} refused us: {err}{hint}") from None
        entries = models.get("data") if isinstance(models, dict) else None
        if not entries:
            raise EngineUnreachable(f"the engine at {self.url} serves no model (/v1/models)")
        entry = entries[0]
        if isinstance(props, dict) and "model_path" in props:
            meta = entry.get("meta") or {}
            n_ctx = int(meta.get("n_ctx") or DEFAULT_MAX_TOKENS)
            n_train = int(meta.get("n_ctx_train") or DEFAULT_MAX_TOKENS)
            details = ",".join(
                f"{k}={meta.get(k)}" for k in ("n_params", "size", "n_vocab", "n_embd", "ftype")
            )
            info = ServerInfo(
                kind=LLAMA_SERVER,
                model=str(props["model_path"]),
                vision=bool((props.get("modalities") or {}).get("vision")),
                slots=max(1, int(props.get("total_slots") or 1)),
                max_tokens=min(DEFAULT_MAX_TOKENS, n_train, n_ctx),
                media_marker=str(props.get("media_marker") or "<__media__>"),
                details=f"llama-server:{details}",
            )
            if n_ctx < min(DEFAULT_MAX_TOKENS, n_train):
                log.warning(
                    "the engine's slots hold %d tokens; longer inputs are cut there (the local "
                    "engine keeps %d): start llama-server with -c %d x --parallel",
                    n_ctx, min(DEFAULT_MAX_TOKENS, n_train), min(DEFAULT_MAX_TOKENS, n_train),
                )  # fmt: skip
            return info
        name = str(entry.get("id") or "")
        return ServerInfo(
            kind=VLLM,
            model=name,
            vision=True,  # Qwen3-VL-Embedding takes images; a text-only model refuses them
            slots=8,
            max_tokens=min(DEFAULT_MAX_TOKENS, int(entry.get("max_model_len") or 1 << 30)),
            details=f"vllm:{entry.get('root') or name}",
        )

    def _check_specials(self) -> None:
        """A prompt with pictures is tokenized by the server with BOS/EOS added when the
        GGUF asks for them; the local engine never adds them (Qwen GGUFs do not ask)."""
        body = {"content": "a", "parse_special": False}
        try:
            bare = self._http.request("POST", "/tokenize", {**body, "add_special": False}, tries=2)
            full = self._http.request("POST", "/tokenize", {**body, "add_special": True}, tries=2)
        except (OSError, http.client.HTTPException, _ServerError, _Refused):
            return  # the probe embedding below reports a server that does not work
        if len(full["tokens"]) != len(bare["tokens"]):
            log.warning(
                "the engine's model adds BOS/EOS tokens to prompts with pictures; their "
                "vectors will differ from the local engine's"
            )

    # -- the Embedder interface -------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def supports_images(self) -> bool:
        return self.info.vision

    def identity(self, dims: int | None = None) -> ModelIdentity:
        """The model behind the URL. llama-server reports its GGUF's path: when that file is
        readable here too, the identity is the local one (an index built locally can be
        updated through the server and back). Otherwise it is made of what the server says
        (file name, parameter count, size, vocabulary), so another model is still refused."""
        mmproj = (self._mmproj_name or f"({self.info.kind})") if self.info.vision else None
        path = Path(self.info.model)
        if self.info.kind == LLAMA_SERVER and path.is_file():
            try:
                return model_identity(
                    path,
                    Path(mmproj) if mmproj else None,
                    instruction=self.instruction,
                    min_pixels=self.min_pixels,
                    max_pixels=self.max_pixels,
                    dims=dims or self.dim,
                )
            except LauncherError as err:  # not a GGUF we can read: use the server's facts
                log.info("engine model %s not readable here: %s", path, err)
        return ModelIdentity(
            model_file=path.name if self.info.kind == LLAMA_SERVER else self.info.model,
            model_size=0,
            model_header_hash=self.info.details,
            mmproj_file=mmproj,
            dims=dims or self.dim,
            instruction=self.instruction,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )

    def count_tokens(self, text: str) -> int:
        """The server tokenizer's count; while the server is unreachable, an estimate (the
        count sizes chunks and progress figures; the file's embedding fails meanwhile and
        the next run reads it again)."""
        try:
            return len(self._tokenize(text, False))
        except EngineUnavailable:
            from ..extract import estimate_tokens

            return estimate_tokens(text)

    def prompt_text(self, item: EmbedInput | str) -> str:
        x = EmbedInput.of(item)
        return prompt.render(
            prompt.embedding_prompt(x.text, len(x.images), x.instruction or self.instruction)
        )

    def release_vision(self) -> None:
        """Nothing to free here (the server holds the vision encoder)."""

    def fork(self) -> RemoteEmbedder:
        return self

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> RemoteEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def embed(self, items: Sequence[EmbedInput | str], *, dims: int | None = None) -> np.ndarray:
        """A float32 (n, dims) array of unit vectors; raises the first failing item's error."""
        return stack_vectors(self.embed_each(items, dims=dims), lambda: dims or self.dim)

    def embed_each(
        self, items: Sequence[EmbedInput | str], *, dims: int | None = None
    ) -> list[np.ndarray | InputError]:
        """One outcome per item, in order: a unit vector or that item's ``InputError``."""
        if dims is not None and hasattr(self, "_dim") and not 1 <= dims <= self._dim:
            raise LauncherError(f"dims must be between 1 and {self._dim}, got {dims}")
        inputs = [EmbedInput.of(x) for x in items]
        if any(x.images for x in inputs) and not self.info.vision:
            raise MmprojRequired(
                f"an image was given but the engine at {self.url} has no vision projector "
                "(start llama-server with --mmproj)"
            )
        size = 1 if self.info.kind == VLLM else max(1, self.settings.batch)
        groups = [list(range(i, min(i + size, len(inputs)))) for i in range(0, len(inputs), size)]
        results: dict[int, np.ndarray | InputError] = {}
        jobs = [self._pool.submit(self._run_group, [inputs[i] for i in g]) for g in groups]
        for group, job in zip(groups, jobs, strict=True):
            for i, outcome in zip(group, job.result(), strict=True):
                results[i] = outcome
        return [_finish(results[i], dims) for i in range(len(inputs))]

    # -- requests ---------------------------------------------------------------------

    def _tries(self) -> int:
        return 1 if self._down.is_set() else max(1, self.settings.retries)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """A request with retries; unreachable -> EngineUnavailable, 4xx -> InputError."""
        try:
            out = self._http.request(method, path, body, tries=self._tries())
        except (OSError, http.client.HTTPException) as err:
            self._down.set()
            raise EngineUnavailable(f"{ENGINE_UNAVAILABLE} ({self.url}: {err})") from None
        except _ServerError as err:
            # busy, loading or unreachable behind a proxy: worth trying again next run
            if err.status in (408, 429, 502, 503, 504) or not self._healthy():
                self._down.set()
                raise EngineUnavailable(f"{ENGINE_UNAVAILABLE} ({self.url}: {err})") from None
            raise InputError(f"the engine could not process this input: {err}") from None
        except _Refused as err:
            raise InputError(f"the engine refused this input: {err}") from None
        self._down.clear()
        return out

    def _healthy(self) -> bool:
        try:
            self._http.once("GET", "/health", timeout=10)
        except (OSError, http.client.HTTPException, _ServerError, _Refused):
            return False
        return True

    def _run_group(self, items: list[EmbedInput]) -> list[np.ndarray | InputError]:
        """Prepare and embed a few inputs in one request; when the request fails as a whole,
        each input is tried alone so one bad input does not take its neighbours with it."""
        out: list[np.ndarray | InputError | None] = [None] * len(items)
        bodies: list[tuple[int, Any]] = []
        for i, item in enumerate(items):
            try:
                bodies.append((i, self._prepare(item)))
            except InputError as err:
                out[i] = err
        if bodies:
            try:
                vectors = self._post([b for _, b in bodies])
                for (i, _), vec in zip(bodies, vectors, strict=True):
                    out[i] = vec
            except EngineUnavailable as err:
                for i, _ in bodies:
                    out[i] = err
            except InputError as err:
                if len(bodies) == 1:
                    out[bodies[0][0]] = err
                else:
                    for i, body in bodies:
                        try:
                            out[i] = self._post([body])[0]
                        except InputError as one:
                            out[i] = one
        return [o if o is not None else InputError("no result") for o in out]

    def _post(self, bodies: list[Any]) -> list[np.ndarray]:
        if self.info.kind == VLLM:
            (body,) = bodies
            data = self._call("POST", "/v1/embeddings", body)
            rows = sorted(data.get("data") or [], key=lambda r: r.get("index", 0))
            return [np.asarray(r["embedding"], dtype=np.float32) for r in rows]
        data = self._call("POST", "/embedding", {"content": bodies, "embd_normalize": -1})
        if not isinstance(data, list) or len(data) != len(bodies):
            raise InputError(f"the engine answered {len(data)} vectors for {len(bodies)} inputs")
        out = []
        for row in sorted(data, key=lambda r: r.get("index", 0)):
            emb = row["embedding"]
            if emb and isinstance(emb[0], list):
                if len(emb) != 1:
                    raise InputError(
                        "the engine returned one vector per token: start llama-server with "
                        "--pooling last"
                    )
                emb = emb[0]
            out.append(np.asarray(emb, dtype=np.float32))
        return out

    # -- preparing one input ----------------------------------------------------------

    def _tokenize(self, text: str, special: bool) -> list[int]:
        """The server's tokenizer, with ``special`` tokens parsed or not (cached)."""
        if not text:
            return []
        key = (text, special)
        with self._tokens_lock:
            hit = self._tokens.get(key)
            if hit is not None:
                self._tokens.move_to_end(key)
                return hit
        if self.info.kind == VLLM:
            body: dict[str, Any] = {"model": self.info.model, "prompt": text}
            body["add_special_tokens"] = False
            tokens = list(self._call("POST", "/tokenize", body)["tokens"])
        else:
            body = {"content": text, "add_special": False, "parse_special": special}
            tokens = [int(t) for t in self._call("POST", "/tokenize", body)["tokens"]]
        with self._tokens_lock:
            self._tokens[key] = tokens
            while len(self._tokens) > TOKEN_CACHE:
                self._tokens.popitem(last=False)
        return tokens

    def _detokenize(self, tokens: list[int]) -> str:
        body: dict[str, Any] = {"tokens": tokens}
        if self.info.kind == VLLM:
            body["model"] = self.info.model
            return str(self._call("POST", "/detokenize", body)["prompt"])
        return str(self._call("POST", "/detokenize", body)["content"])

    def _prepare(self, item: EmbedInput) -> Any:
        """The request body of one input (raises its InputError)."""
        images = [
            img.prepare_image(src, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            for src in item.images
        ]
        instruction = item.instruction or self.instruction
        if self.info.kind == LLAMA_SERVER and not images:
            parts = prompt.embedding_prompt(item.text, 0, instruction)
            runs = tokenize_parts(parts, [], self._tokenize, self.info.max_tokens)
            (tokens,) = runs
            assert isinstance(tokens, list)
            return tokens
        text = self._fit(item.text, images, instruction)
        if self.info.kind == LLAMA_SERVER:
            marker = self.info.media_marker or ""
            parts = prompt.embedding_prompt(text, len(images), instruction)
            return {
                "prompt_string": prompt.render(parts, image_marker=marker),
                "multimodal_data": [png_base64(im) for im in images],
            }
        return self._chat_body(text, images, instruction)

    def _fit(
        self, text: str | None, images: list[img.PreparedImage], instruction: str
    ) -> str | None:
        """Content sent as a string: special-token look-alikes broken up, and cut (through
        the tokenizer) where the local engine would cut it to fit the token limit."""
        if not text:
            return text
        text = neutralize(text, self.info.media_marker)
        parts = prompt.embedding_prompt(text, len(images), instruction)
        full = sum(run_len(r) for r in tokenize_parts(parts, images, self._tokenize, 1 << 30))
        over = full - self.info.max_tokens
        if over <= 0:
            return text
        content = self._tokenize(text, False)
        keep = len(content) - over
        if keep <= 0:
            raise InputError(
                f"input needs {full} tokens but the limit is {self.info.max_tokens} "
                "(an image takes (width/32) x (height/32) tokens)"
            )
        log.warning("input truncated from %d to %d tokens to fit the limit", full, full - over)
        return self._detokenize(content[:keep])

    def _chat_body(
        self, text: str | None, images: list[img.PreparedImage], instruction: str
    ) -> dict[str, Any]:
        """vLLM's chat embedding request: the model's chat template renders the official
        prompt from these messages (as the official code does with ``apply_chat_template``)."""
        user: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png_base64(im)}}
            for im in images
        ]
        if text:
            user.append({"type": "text", "text": text})
        elif not images:
            user.append({"type": "text", "text": prompt.EMPTY_INPUT})
        return {
            "model": self.info.model,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": instruction}]},
                {"role": "user", "content": user},
            ],
            "add_generation_prompt": True,
            "continue_final_message": False,
            "add_special_tokens": False,
            "encoding_format": "float",
            "mm_processor_kwargs": {
                "min_pixels": self.min_pixels,
                "max_pixels": self.max_pixels,
            },
        }
