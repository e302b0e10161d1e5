"""Reading the server's Prometheus /metrics (names from service/contract.py) and checking response
bodies."""

from __future__ import annotations

import base64
import json
import math

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families


def fetch_metrics(base_url: str, path: str, timeout_s: float = 10.0) -> str:
    response = httpx.get(base_url + path, timeout=timeout_s)
    response.raise_for_status()
    return response.text


def histogram_totals(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram over all its label sets; (0, 0) when it has no samples yet."""
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_sum":
                total += sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
    return total, count


def gauge_value(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        if family.name == name and family.samples:
            return float(family.samples[0].value)
    return None


def mean_between(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """The mean of what a histogram observed between two scrapes."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count > 0 else None


class BadEmbeddingResponseError(ValueError):
    """A 2xx response that is not a well-formed embedding: not work to count."""


def check_embedding_body(body: bytes, dimension: int, encoding_format: str) -> list[float]:
    """The first vector of an OpenAI embeddings response, checked for shape and unit norm."""
    try:
        data = json.loads(body)
        embedding = data["data"][0]["embedding"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadEmbeddingResponseError(f"not an embeddings response: {body[:200]!r}") from exc
    if encoding_format == "base64":
        raw = base64.b64decode(embedding)

        vector = [float(x) for x in np.frombuffer(raw, dtype="<f4")]
    else:
        vector = [float(x) for x in embedding]
    if len(vector) != dimension:
        raise BadEmbeddingResponseError(f"expected {dimension} dimensions, got {len(vector)}")
    norm = math.sqrt(sum(x * x for x in vector))
    if not math.isclose(norm, 1.0, abs_tol=1e-3):
        raise BadEmbeddingResponseError(f"expected a unit vector, got norm {norm:.4f}")
    return vector
