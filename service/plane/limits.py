"""Per-request limits, the same for every protocol: rows, samples and their product."""

from dataclasses import dataclass

from vae_serve.core.errors import InvalidInput
from vae_serve.service.settings import Settings


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidInput(f"{field}: {value} is out of range; allowed {low}..{high}")
    return value


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_k: int
    max_row_samples: int
    max_sample_n: int
    max_stream_sample_n: int
    default_chunk_size: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(
            max_rows=settings.max_rows,
            max_k=settings.max_k,
            max_row_samples=settings.max_row_samples,
            max_sample_n=settings.max_sample_n,
            max_stream_sample_n=settings.max_stream_sample_n,
            default_chunk_size=settings.default_chunk_size,
        )

    def samples_per_row(self, field: str, value: int, rows: int, low: int) -> int:
        """``value`` samples for each of ``rows`` rows: within max_k, and rows x value within max_row_samples."""
        check_range(field, value, low, self.max_k)
        if rows * value > self.max_row_samples:
            raise InvalidInput(
                f"{field}: {rows} rows x {value} samples = {rows * value} exceeds the limit of "
                f"{self.max_row_samples} per request; send fewer rows or samples"
            )
        return value

    def sample_count(self, n: int) -> int:
        return check_range("n", n, 1, self.max_sample_n)

    def stream_count(self, n: int) -> int:
        return check_range("n", n, 1, self.max_stream_sample_n)

    def chunk_size(self, requested: int) -> int:
        """Rows per SampleStream message: the request's, or the default (0), at most max_sample_n."""
        default = min(self.default_chunk_size, self.max_sample_n)
        return check_range("chunk_size", requested or default, 1, self.max_sample_n)
