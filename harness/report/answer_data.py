"""The report's answer, after the verdicts: what changes the bits (bit_effects.py), the cheapest
recipe that reproduces on each image (recipe.py), whether a diverging cell's noise matters
against a change of seed (noise.py), and the control cells that must diverge (controls.py).

Data only, as report_data.py is for the verdicts; report.json carries each of these under
``answer`` (its schema: docs/report.schema.json, ``harness schema --report``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The level of the noise test: a difference in spread is called at p < ALPHA (two-sided).
ALPHA = 0.05
#: The fewest runs on each side (a cell's repeats; the seeds) the noise test judges from.
MIN_RUNS = 3


@dataclass(kw_only=True)
class CellPair:
    """Two cells that differ in one setting only, both reproducing, compared bit for bit.

    ``values`` are the setting's values in ``cells`` (names), in the same order; ``equal``:
    their trajectories are bit-identical; ``first_step``: the global step where they first
    differ (None when equal, or when the losses could not be read); ``machines_differ``: set
    when the two cells' runs ran on different machines (such a pair is reported apart, never
    counted as the setting's effect)."""

    setting: str
    image: str
    cells: tuple[str, str]
    values: tuple[Any, Any]
    equal: bool
    first_step: int | None = None
    machines_differ: str | None = None


@dataclass(kw_only=True)
class ImageEffect:
    """One setting's pairs on one image (the same-machine ones): ``changed`` of ``pairs``."""

    image: str
    pairs: int
    changed: int


@dataclass(kw_only=True)
class SettingEffect:
    """Whether one setting that varies in the matrix changes the bits.

    Counted over the pairs of cells that differ only in ``setting``, whose repeats each
    reproduce and ran on one machine: ``changed`` of ``pairs`` have different trajectories,
    first at ``first_step`` (the earliest over the changed pairs). ``by_image`` splits the
    counts per image (for ``image`` itself: empty). ``other_machine_pairs`` (of which
    ``other_machine_changed`` differ) ran on different machines: reported, not counted.
    ``unjudged_pairs``: pairs where a cell does not reproduce (no answer from them).
    ``effect``: ``always``, ``never``, ``sometimes``, ``one_image`` (changes the bits on some
    images only) or ``no_pairs``. ``sentence`` says it in words, ``pair_list`` holds every
    pair."""

    setting: str
    effect: str
    pairs: int
    changed: int
    first_step: int | None
    by_image: list[ImageEffect] = field(default_factory=list)
    other_machine_pairs: int = 0
    other_machine_changed: int = 0
    unjudged_pairs: int = 0
    sentence: str = ""
    pair_list: list[CellPair] = field(default_factory=list)


@dataclass(kw_only=True)
class RequiredSetting:
    """A setting the matrix shows a reproducing recipe needs on an image: every reproducing
    cell has ``value``, and each cell listed in ``broken_by`` (a reproducing cell with this one
    setting flipped) diverges."""

    setting: str
    value: Any
    broken_by: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Recipe:
    """The cheapest settings that reproduce on one image (for one ``workload``), as code.

    ``cell``: the fastest reproducing cell (median seconds per epoch over its ok runs; None
    where no cell reproduces), ``settings`` its settings as the report shows them;
    ``cost_ratio``: its time against ``fastest_cell``, the fastest cell on the image whatever
    its verdict. ``required``: the settings the matrix shows are needed. ``code``: a snippet
    for a Lightning script; ``env``: the environment variables it needs set before Python
    starts. Where no cell reproduces: ``cell`` is None and ``nearest`` names the diverging cell
    whose repeats agree longest. ``withheld``: why no recipe is given (the image's control
    reproduced). ``sentence``: the recipe in one line (the terminal prints it)."""

    image: str
    cell: str | None
    cell_id: str | None = None
    #: what this recipe trains, where the matrix trains more than one thing on the image
    #: (``model``, ``entry``, ``params.*``, the hyperparameters): a recipe per training, since
    #: the fastest cell of another network is no recipe for yours; empty where there is one
    workload: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds_per_epoch: float | None = None
    fastest_cell: str | None = None
    fastest_seconds_per_epoch: float | None = None
    cost_ratio: float | None = None
    required: list[RequiredSetting] = field(default_factory=list)
    code: str = ""
    env: dict[str, str] = field(default_factory=dict)
    nearest: str | None = None
    withheld: str | None = None
    sentence: str = ""


@dataclass(kw_only=True)
class Spread:
    """A final metric over ``n`` runs: min, max and the sample standard deviation (None for
    fewer than 2 runs)."""

    n: int
    min: float
    max: float
    std: float | None


@dataclass(kw_only=True)
class NoiseTest:
    """One final metric (``val_loss`` or ``val_acc``) of a diverging cell: its repeats'
    spread (``noise``) beside the spread across seeds (``seeds``: the first ok run of each cell
    that differs from it in ``seed`` only, its own included; None without a seed axis).

    The test is the two-sided F-test of equal variances: ``statistic`` is var(noise) /
    var(seeds), ``p_value`` its two-sided p, judged at ``alpha``. ``needed_runs``: the runs per
    side at which the observed ratio would be significant at ``alpha`` (None: no number of
    runs up to 1,000 would, or there is nothing to test). ``verdict``: ``noise_smaller``,
    ``noise_larger``, ``same_spread`` (no difference at ``alpha``), ``not_enough_runs`` (fewer
    than ``MIN_RUNS`` on a side), ``no_seed_axis`` or ``no_spread`` (the metric is equal over
    every run on both sides). ``sentence`` says it."""

    metric: str
    noise: Spread | None
    seeds: Spread | None
    statistic: float | None
    p_value: float | None
    alpha: float
    needed_runs: int | None
    verdict: str
    sentence: str = ""


@dataclass(kw_only=True)
class CellNoise:
    """The noise tests of one cell whose repeats differ."""

    cell: str
    cell_id: str
    image: str
    seed_cells: list[str] = field(default_factory=list)
    tests: list[NoiseTest] = field(default_factory=list)


@dataclass(kw_only=True)
class ControlResult:
    """One image's control cell (it must not reproduce): ``seen``: True when it diverged (the
    harness sees a difference there), False when it reproduced (no ``reproduces`` verdict is
    given on that image), None when it has no verdict."""

    image: str
    cell: str
    verdict: str
    seen: bool | None
    sentence: str = ""


@dataclass(kw_only=True)
class Answer:
    """The report's answer (``Report.answer``; report.json's ``answer``)."""

    bit_effects: list[SettingEffect] = field(default_factory=list)
    recipes: list[Recipe] = field(default_factory=list)
    noise: list[CellNoise] = field(default_factory=list)
    controls: list[ControlResult] = field(default_factory=list)
    alpha: float = ALPHA
    min_runs: int = MIN_RUNS
