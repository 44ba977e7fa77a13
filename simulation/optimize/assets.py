"""Per-path returns of each asset — a single-zone, or zone × region, sub-fund — on common random numbers.

Each asset is the configured fund with its whole generated book in one zone (and one region): same terms,
fees, waterfall, market and seed. Every sub-fund therefore sees the same market scenario on path ``k`` (the
zone indices are drawn jointly, by path block, from the one seed), so the columns of the path matrix are
jointly distributed as the zones are. Explicit loans are left out: an asset is a fresh fund of the zone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulation import engine
from simulation.config import ZONES, SimulationConfig, load_config
from simulation.executors import CancelCheck, ChunkExecutor

MIN_REGION_WEIGHT = 1e-9  # a region below this share gets no loans


@dataclass(frozen=True)
class Asset:
    zone: int  # index into ZONES
    region: str | None = None  # None: every region of the fund, by its configured weight

    @property
    def label(self) -> str:
        return ZONES[self.zone] if self.region is None else f"{ZONES[self.zone]}/{self.region}"


@dataclass(frozen=True)
class ReturnPaths:
    """LP net IRR and LP MOIC of each asset on each path: ``(paths, assets)``, NaN-free rows only."""

    assets: tuple[Asset, ...]
    irr: np.ndarray
    moic: np.ndarray
    dropped_paths: int = 0  # paths left out because some asset's IRR was undefined on them

    def __post_init__(self) -> None:
        if self.irr.shape != self.moic.shape or self.irr.shape[1] != len(self.assets):
            raise ValueError("irr and moic must both be (paths, assets)")

    @property
    def paths(self) -> int:
        return self.irr.shape[0]

    @staticmethod
    def of(assets: tuple[Asset, ...], irr: np.ndarray, moic: np.ndarray) -> ReturnPaths:
        """Keep the paths on which every asset has an IRR and a MOIC."""
        keep = np.isfinite(irr).all(axis=1) & np.isfinite(moic).all(axis=1)
        return ReturnPaths(assets, irr[keep], moic[keep], int((~keep).sum()))


def zone_assets() -> tuple[Asset, ...]:
    return tuple(Asset(zone) for zone in range(len(ZONES)))


def zone_region_assets(config: SimulationConfig) -> tuple[Asset, ...]:
    return tuple(Asset(zone, region.name) for zone in range(len(ZONES)) for region in config.book.regions)


def allocation_config(
    config: SimulationConfig, zone_weights: np.ndarray, region_weights: dict[str, float] | None = None
) -> SimulationConfig:
    """The fund with its whole book generated at ``zone_weights`` (and ``region_weights`` when given,
    regions of zero weight left out); explicit loans are dropped. Validated like any config."""
    data = config.model_dump(mode="json")
    book = data["book"]
    book["loans"], book["generate"] = [], True
    book["generated"]["zone_allocation"] = dict(zip(ZONES, (float(x) for x in zone_weights)))
    if region_weights is not None:
        book["regions"] = [
            dict(region, weight=region_weights[region["name"]])
            for region in book["regions"]
            if region_weights.get(region["name"], 0.0) > MIN_REGION_WEIGHT
        ]
    return load_config(data)


def asset_config(config: SimulationConfig, asset: Asset) -> SimulationConfig:
    weights = np.eye(len(ZONES))[asset.zone]
    return allocation_config(config, weights, None if asset.region is None else {asset.region: 1.0})


Progress = Callable[[int], None]  # paths done so far, over all the sub-funds


def simulate_assets(
    config: SimulationConfig,
    assets: tuple[Asset, ...],
    *,
    progress: Progress | None = None,
    cancelled: CancelCheck | None = None,
    executor: ChunkExecutor | None = None,
) -> ReturnPaths:
    """Run every asset's sub-fund with the fund's seed and collect its per-path LP IRR and MOIC."""
    irr: list[np.ndarray] = []
    moic: list[np.ndarray] = []
    per_run = engine.path_count(config)
    for asset in assets:

        def report(p: engine.Progress, before: int = len(irr) * per_run) -> None:
            if progress is not None:
                progress(before + p.paths_done)

        result = engine.run(
            asset_config(config, asset),
            progress=report,
            cancelled=cancelled,
            keep_paths=True,
            executor=executor,
        )
        assert result.paths is not None
        irr.append(result.paths["lp_net_irr"])
        moic.append(result.paths["lp_moic"])
    return ReturnPaths.of(assets, np.column_stack(irr), np.column_stack(moic))
