"""Server settings: every field is an environment variable EMBED_<FIELD> (see contract.ENV_PREFIX).

`python -m service --host/--port/--model` override the environment. Each field says why it exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import contract

Pooling = Literal["mean", "cls", "max", "lasttoken", "mean_sqrt_len"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
TokenIds = Literal["cl100k_base", "model", "reject"]

# OpenAI's own limit on inputs per request; clients are written against it.
MAX_INPUTS_PER_REQUEST = 2048


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=contract.ENV_PREFIX, extra="ignore", frozen=True, protected_namespaces=()
    )

    # --- Model -----------------------------------------------------------------------------------
    model: str | None = Field(
        None,
        description="Local folder or Hugging Face model id (read from the local cache). "
        "Unset: the bundled all-MiniLM-L6-v2, so the server starts with no download at all.",
    )
    model_revision: str | None = Field(
        None,
        description="Pinned commit of a Hub model, so a rebuild cannot silently change vectors.",
    )
    served_model_name: str | None = Field(
        None, description="The id clients send as `model`; defaults to the model id."
    )
    model_aliases: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra accepted `model` values (comma-separated): clients with a fixed name.",
    )
    allow_download: bool = Field(
        False,
        description="Fetch a model missing from the cache. Off: production pods start from the "
        "image alone (HF_HUB_OFFLINE semantics), never depend on the Hub at run time.",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N.")
    dtype: Dtype = Field(
        "auto",
        description="auto: float32 on CPU; on CUDA bfloat16 for a model trained in it (float32 "
        "on GPUs without bfloat16: float16 could overflow), else float16. /info says which.",
    )
    pooling: Pooling | None = Field(
        None, description="Override the pooling read from the model's sentence-transformers files."
    )
    max_tokens: int | None = Field(
        None, ge=2, description="Lower the model's maximum sequence length (inputs are truncated)."
    )
    truncate: bool = Field(
        True,
        description="Cut over-long inputs to max_tokens and report it (header, usage); "
        "off: reject them with 400 instead.",
    )
    normalize: bool | None = Field(
        None,
        description="L2-normalise vectors. Unset: as the model's modules.json says (a Normalize "
        "step or not), so vectors equal sentence-transformers'; true/false forces it.",
    )
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description='Named prompts as JSON ({"query": "query: "}), over those of the model\'s '
        "config_sentence_transformers.json: for models whose prompts live only in their card.",
    )
    default_prompt_name: str | None = Field(
        None,
        description="The prompt put before inputs of requests that name none. Unset: the "
        "model's default_prompt_name; empty: none.",
    )
    default_prompt: str | None = Field(
        None, description="A literal default prompt instead of a named one (empty: none)."
    )
    matryoshka_dimensions: Annotated[list[int] | Literal["any", "none"] | None, NoDecode] = Field(
        None,
        description="Which `dimensions` requests may ask for: comma-separated sizes, any or none. "
        "Unset: what the model's config.json declares (matryoshka_dimensions / is_matryoshka); "
        "shortened vectors of other models lose quality, so they are refused.",
    )
    token_ids: TokenIds = Field(
        "cl100k_base",
        description="What token-id input means. cl100k_base: OpenAI's tokenizer, as the OpenAI "
        "API reads it (LangChain's OpenAIEmbeddings sends those by default): decoded to text, "
        "then embedded like text. model: this model's own ids, each list the complete sequence "
        "(special tokens included, as vLLM and TEI read them). reject: a 400 that names the "
        "client setting to send text instead.",
    )
    warmup: bool = Field(True, description="Run forward passes before /ready turns 200.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch; default torch's own (physical cores)."
    )

    # --- Batching and admission -------------------------------------------------------------------
    max_batch_tokens: int = Field(
        32768,
        ge=1,
        description="Padded tokens per forward pass: bounds activation memory and batch latency.",
    )
    max_batch_size: int = Field(128, ge=1, description="Inputs per forward pass.")
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Wait this long for more work when a batch is not full. 0: never wait when "
        "the device is free (the default: the queue fills while the device is busy).",
    )
    # 1 s: what is admitted is then answered in about this plus the pass under way plus its own
    # work (~2.2 s at 32x overload on the 2-core build machine, where a pass of 128 sentences
    # takes ~1 s; a GPU pass takes milliseconds). 2 s answered at ~3-4 s there, p99 up to 6 s.
    max_queue_seconds: float = Field(
        1.0,
        gt=0,
        description="Latency target of admission: a request that would wait longer than this "
        "for queued work (estimated from the device's measured seconds per token) gets 429 with "
        "Retry-After; one not started this long after it was due is shed (429 queue_timeout).",
    )
    max_queue_items: int = Field(
        16384,
        ge=1,
        description="Inputs held waiting for the device at most, whatever the time estimate: "
        "bounds the queue's memory (admission is by max_queue_seconds).",
    )
    # Unset by default: 2048 inputs x the model's maximum, the most a request can reach, so no
    # request is refused for its total. What a total once protected is bounded per input now:
    # each text is cut to a character budget before tokenising (service.textcut) and to
    # max_tokens after, so a request's memory and tokenizer time are at most 2048 inputs' worth;
    # admission is by estimated queued seconds, which do not count the request's own work, and
    # round robin keeps a bulk request from delaying small ones by more than a pass (service.
    # batcher). A fixed 300,000 (OpenAI's limit, in cl100k tokens) refused LangChain's default
    # batches, which it packs up to 300,000 cl100k tokens: 1,000 Russian texts of 299 cl100k
    # tokens are 512,000 tokens of a 512-token model. Set it to cap one request's work (a tenant's
    # share), knowing that clients packing to OpenAI's limit will then get 400s.
    max_request_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens per request (after truncation) before 400. Unset: 2048 x the "
        "model's maximum, the most a request can hold, i.e. no limit beyond the per-input one.",
    )
    # 16 MiB, kept after weighing it against what a request needs now that every text is cut to
    # a character budget before tokenising (service.textcut): a 15 MB text costs ~40 ms of JSON
    # parsing and ~40 MB at peak, not 13.7 s and 2.5 GB. The most a request can have embedded is
    # far smaller: 2048 inputs of 512 tokens at ~6 bytes a token (CJK escaped as \uXXXX, the
    # default of Python's json) is ~6 MB. The rest is for clients that send whole documents and
    # rely on truncation (2048 inputs of 8 KB: a page each), which a lower limit would refuse
    # with nothing gained.
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Request body size before 413."
    )
    pass_cost_tokens: int | None = Field(
        None,
        ge=0,
        description="The fixed cost of one forward pass, in padded tokens: a window of queued "
        "inputs is cut into length buckets where the padding saved exceeds this per extra pass. "
        "Unset: 64 on CPU (MiniLM: a pass's fixed part is worth tens of tokens), 2048 on CUDA "
        "(a pass's fixed part is milliseconds of kernel launches: split only on large padding).",
    )

    # --- HTTP connections (service.httpserver: what uvicorn itself does not bound) ---------------
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request's line and headers must arrive within this, counted from the "
        "connection's start (or a later request's first byte): slow or silent clients "
        "(slowloris) are closed, with 408 when they had started a request.",
    )
    body_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="A request's body must arrive within this after its headers (408): "
        "60 s is 280 KB/s for the largest body.",
    )
    keep_alive_timeout_seconds: int = Field(
        contract.KEEP_ALIVE_TIMEOUT_SECONDS,
        ge=1,
        description="Close a connection idle this long between requests. Under the NLB's idle "
        "timeout (60 s at the least), so the server closes first, never the NLB silently.",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Request line and headers, in bytes, before 431."
    )
    max_headers: int = Field(100, ge=1, description="Header fields per request before 431.")
    max_connections: int = Field(
        4096,
        ge=1,
        description="Open connections. Past it a new one replaces the one waiting longest for a "
        "request (slow first, then idle); when every one is busy it is refused with 503.",
    )

    # --- Access --------------------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted bearer keys (comma-separated). Empty with no file: /v1 is open.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one key per line (a mounted Secret), merged with api_keys."
    )

    # --- Process ----------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Bind address; the container must listen on all.")
    port: int = Field(contract.SERVICE_PORT, ge=1, le=65535, description="The HTTP API port.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Also serve /metrics and the probes (/health, /ready) on this port (0: "
        "off): a NetworkPolicy can admit only Prometheus (and the node's kubelet) to it, and no "
        "busy API connection can lock the probes out; they stay on the main port too.",
    )
    drain_delay_seconds: float = Field(
        contract.DRAIN_DELAY_SECONDS,
        ge=0,
        description="After SIGTERM keep serving (with /ready 503) while load balancers stop "
        "routing here.",
    )
    drain_timeout_seconds: float = Field(
        contract.DRAIN_TIMEOUT_SECONDS,
        ge=0,
        description="Then finish queued and in-flight requests within this bound.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    access_log: bool = Field(True, description="One log line per request, with its request id.")

    @field_validator("model_aliases", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("matryoshka_dimensions", mode="before")
    @classmethod
    def _parse_dimensions(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text in ("", "any", "none"):
            return text or None
        try:
            dims = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"{value!r}: expected comma-separated sizes (64,128,256), any or none"
            ) from None
        if not dims or min(dims) < 1:
            raise ValueError(f"{value!r}: sizes must be positive integers")
        return dims

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_queue_items < self.max_batch_size:
            raise ValueError(
                f"max_queue_items ({self.max_queue_items}) must be >= max_batch_size "
                f"({self.max_batch_size}): a smaller queue can never fill a batch"
            )
        if self.default_prompt is not None and self.default_prompt_name is not None:
            raise ValueError("set default_prompt or default_prompt_name, not both")
        return self

    def resolved_pass_cost_tokens(self, device: str) -> int:
        if self.pass_cost_tokens is not None:
            return self.pass_cost_tokens
        return 2048 if device.startswith("cuda") else 64

    def load_api_keys(self) -> frozenset[str]:
        """The accepted keys: api_keys plus the non-empty, non-comment lines of api_keys_file."""
        keys = set(self.api_keys)
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"{contract.ENV_API_KEYS_FILE}={self.api_keys_file}: {exc}"
                ) from exc
            keys.update(
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            )
        return frozenset(keys)
