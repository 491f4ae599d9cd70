"""Plan stage: the map results' histograms into partitions, each with the spill-run slices of
its rows and of its margin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hats.pixel_math import HealpixPixel
from hats.pixel_math.healpix_shim import margin2order
from hats.pixel_math.pixel_margins import get_margin

from tmass_lake.convert.map import MapResult
from tmass_lake.convert.parameters import HISTOGRAM_ORDER, BuildParameters
from tmass_lake.convert.spill import SpillRun


@dataclass(frozen=True)
class Slice:
    """Rows ``[start, stop)`` of one spill run."""

    run: str
    start: int
    stop: int


@dataclass(frozen=True)
class Partition:
    """One destination pixel and the run slices that hold its rows (and its margin's)."""

    pixel: HealpixPixel
    rows: int
    slices: tuple[Slice, ...]
    margin_order: int
    margin_pixels: tuple[int, ...]
    margin_slices: tuple[Slice, ...]


def effective_threshold(params: BuildParameters, results: list[MapResult]) -> int:
    """Rows per partition allowed by both the row and the byte threshold."""
    rows = sum(r.rows for res in results for r in res.runs)
    nbytes = sum(r.nbytes for res in results for r in res.runs)
    if rows == 0:
        return params.pixel_threshold
    per_row = nbytes / rows
    return max(1, min(params.pixel_threshold, int(params.byte_threshold / per_row)))


def sparse_histogram(results: list[MapResult]) -> tuple[np.ndarray, np.ndarray]:
    """Non-empty ``HISTOGRAM_ORDER`` pixels (sorted) and their row counts, over every run."""
    pixels = np.concatenate([r.pixels for res in results for r in res.runs] or [np.empty(0, np.int64)])
    counts = np.concatenate([r.counts for res in results for r in res.runs] or [np.empty(0, np.int64)])
    unique, inverse = np.unique(pixels, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)


def destination_pixels(params: BuildParameters, results: list[MapResult],
                       threshold: int) -> list[tuple[HealpixPixel, int]]:
    """Adaptive partitioning: the coarsest non-empty pixels holding at most ``threshold`` rows.

    Same result as hats' ``generate_alignment`` with empty siblings dropped, computed top-down
    on the sparse histogram (hats' dense version costs ~20 s at order 10 whatever the size).
    """
    fine, counts = sparse_histogram(results)
    open_ = np.ones(len(fine), dtype=bool)
    found: list[tuple[HealpixPixel, int]] = []
    for order in range(params.lowest_order, params.highest_order + 1):
        idx = np.flatnonzero(open_)
        if not len(idx):
            break
        parents = fine[idx] >> (2 * (HISTOGRAM_ORDER - order))
        starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
        sums = np.add.reduceat(counts[idx], starts)
        close = sums <= threshold if order < params.highest_order else np.ones(len(sums), bool)
        for s, n in zip(starts[close], sums[close], strict=True):
            found.append((HealpixPixel(order, int(parents[s])), int(n)))
        ends = np.r_[starts[1:], len(idx)]
        for s, e in zip(starts[close], ends[close], strict=True):
            open_[idx[s:e]] = False
    return sorted(found, key=lambda x: (x[0].order, x[0].pixel))


def _run_slices(run: SpillRun, offsets: np.ndarray, ranges: np.ndarray) -> list[Slice]:
    """The rows of a run whose fine pixel lies in any ``[lo, hi)`` of ``ranges`` (n x 2), merged."""
    if not len(ranges):
        return []
    a = np.searchsorted(run.pixels, ranges[:, 0])
    b = np.searchsorted(run.pixels, ranges[:, 1])
    starts, stops = offsets[a], offsets[b]
    keep = stops > starts
    out: list[Slice] = []
    for lo, hi in zip(starts[keep].tolist(), stops[keep].tolist(), strict=True):
        if out and out[-1].stop == lo:
            out[-1] = Slice(run.url, out[-1].start, hi)
        else:
            out.append(Slice(run.url, lo, hi))
    return out


def margin_order_for(params: BuildParameters, highest: int) -> int:
    """Order of the margin pixels: fine enough to be tight, never coarser than the partitions."""
    return max(int(margin2order(np.array([params.margin_arcsec / 60.0]))[0]), highest)


def plan_partitions(params: BuildParameters, results: list[MapResult], threshold: int) -> list[Partition]:
    """Every destination pixel (at most ``threshold`` rows) with the run slices of its rows and margin."""
    pixels = destination_pixels(params, results, threshold)
    runs = [run for res in sorted(results, key=lambda r: r.index) for run in res.runs]
    highest = max((p.order for p, _ in pixels), default=0)
    m_order = margin_order_for(params, highest)
    offsets = [np.concatenate([[0], np.cumsum(run.counts)]) for run in runs]
    partitions = []
    for pixel, count in pixels:
        shift = 2 * (HISTOGRAM_ORDER - pixel.order)
        own = np.array([[pixel.pixel << shift, (pixel.pixel + 1) << shift]])
        slices = tuple(s for run, off in zip(runs, offsets, strict=True) for s in _run_slices(run, off, own))
        margin = get_margin(pixel.order, pixel.pixel, m_order - pixel.order)
        around = _fine_ranges(margin, m_order)
        margin_slices = tuple(
            s for run, off in zip(runs, offsets, strict=True) for s in _run_slices(run, off, around)
        )
        partitions.append(Partition(pixel, count, slices, m_order, tuple(margin), margin_slices))
    return partitions


def _fine_ranges(pixels: list[int], order: int) -> np.ndarray:
    """Merged ``[lo, hi)`` ranges of ``HISTOGRAM_ORDER`` pixels covering pixels at ``order`` (n x 2)."""
    p = np.asarray(pixels, dtype=np.int64)
    if order >= HISTOGRAM_ORDER:
        lo = np.unique(p >> (2 * (order - HISTOGRAM_ORDER)))
        hi = lo + 1
    else:
        shift = 2 * (HISTOGRAM_ORDER - order)
        lo = np.sort(p) << shift
        hi = lo + (1 << shift)
    if not len(lo):
        return np.empty((0, 2), np.int64)
    breaks = np.flatnonzero(lo[1:] > hi[:-1]) + 1
    return np.stack([lo[np.r_[0, breaks]], hi[np.r_[breaks - 1, len(hi) - 1]]], axis=1)
