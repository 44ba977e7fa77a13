"""The one typed configuration of the fund simulation, with every default in one place.

Unknown keys are rejected, and every invalid value raises a ``ConfigError`` naming the field
(``fees.management_fee_rate``). Rates are annual decimals, money is in the fund currency, time is
in months from fund inception unless the name says ``_years``. ``docs/model.md`` explains each field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ZONES: tuple[str, ...] = ("green", "orange", "red")

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
OpenRate = Annotated[float, Field(gt=0.0, lt=1.0)]
Money = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
PositiveMoney = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Growth = Annotated[float, Field(gt=-1.0, le=1.0)]


class ConfigError(ValueError):
    """An invalid configuration; ``violations`` lists ``(field path, message)`` pairs."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{field}: {message}" for field, message in violations))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Zone(StrEnum):
    GREEN = "green"
    ORANGE = "orange"
    RED = "red"

    @property
    def index(self) -> int:
        return ZONES.index(self.value)


class DeploymentPace(StrEnum):
    EVEN = "even"
    FRONT_LOADED = "front_loaded"
    BACK_LOADED = "back_loaded"
    BELL_CURVE = "bell_curve"


class CapitalCallMode(StrEnum):
    AS_NEEDED = "as_needed"
    UPFRONT = "upfront"
    SCHEDULE = "schedule"


class FeeBasis(StrEnum):
    COMMITTED = "committed"
    INVESTED = "invested"
    NAV = "nav"


class FeeTiming(StrEnum):
    ADVANCE = "advance"
    ARREARS = "arrears"


class FeeRecipient(StrEnum):
    GP = "gp"
    FUND = "fund"


class WaterfallStructure(StrEnum):
    EUROPEAN = "european"
    AMERICAN = "american"


class CatchUp(StrEnum):
    FULL = "full"
    PARTIAL = "partial"
    NONE = "none"


class Compounding(StrEnum):
    ANNUAL = "annual"
    QUARTERLY = "quarterly"
    MONTHLY = "monthly"
    CONTINUOUS = "continuous"
    SIMPLE = "simple"


class ShareMethod(StrEnum):
    LTV_BASED = "ltv_based"
    FIXED = "fixed"
    TIERED = "tiered"


class CallScheduleEntry(_Model):
    year: Annotated[float, Field(ge=0.0)]
    fraction: Annotated[float, Field(gt=0.0, le=1.0)]


class FundTerms(_Model):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "AUD"
    size: PositiveMoney = 100_000_000.0
    term_years: Annotated[int, Field(ge=1, le=30)] = 10
    gp_commitment: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.02
    deployment_period_years: Annotated[float, Field(ge=0.0, le=30.0)] = 3.0
    deployment_pace: DeploymentPace = DeploymentPace.EVEN
    deployment_target_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.88
    capital_call_mode: CapitalCallMode = CapitalCallMode.AS_NEEDED
    capital_call_schedule: tuple[CallScheduleEntry, ...] = ()
    reinvestment_period_years: Annotated[float, Field(ge=0.0, le=30.0)] = 5.0
    min_remaining_term_to_reinvest_years: Annotated[float, Field(ge=0.0)] = 2.0
    recycle_principal_fraction: Rate = 1.0
    recycle_gain_fraction: Rate = 0.0
    rebalancing_strength: Rate = 0.5
    reserve_fraction: Rate = 0.03
    reserve_months_of_costs: Annotated[int, Field(ge=0, le=36)] = 12
    cash_rate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.03
    distribution_frequency_months: Annotated[int, Field(ge=1, le=12)] = 3
    fund_end_haircut: Rate = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.capital_call_mode is CapitalCallMode.SCHEDULE:
            if not self.capital_call_schedule:
                raise ValueError("capital_call_schedule: required when capital_call_mode is 'schedule'")
            if abs(sum(e.fraction for e in self.capital_call_schedule) - 1.0) > 1e-9:
                raise ValueError("capital_call_schedule: fractions must sum to 1")
            if max(e.year for e in self.capital_call_schedule) >= self.term_years:
                raise ValueError("capital_call_schedule: years must fall inside the fund term")
        elif self.capital_call_schedule:
            raise ValueError("capital_call_schedule: only used when capital_call_mode is 'schedule'")
        if self.deployment_period_years >= self.term_years:
            raise ValueError("deployment_period_years: must be shorter than term_years")
        if self.reinvestment_period_years > self.term_years:
            raise ValueError("reinvestment_period_years: must not exceed term_years")
        return self


class StepDown(_Model):
    """After ``after_year`` the fee rate is multiplied by ``rate_multiplier`` and charged on ``basis``."""

    enabled: bool = False
    after_year: Annotated[float, Field(ge=0.0)] = 5.0
    rate_multiplier: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    basis: FeeBasis = FeeBasis.INVESTED


class Fees(_Model):
    management_fee_rate: Annotated[float, Field(ge=0.0, le=0.05)] = 0.02
    management_fee_basis: FeeBasis = FeeBasis.COMMITTED
    management_fee_timing: FeeTiming = FeeTiming.ADVANCE
    step_down: StepDown = StepDown()
    expense_rate: Annotated[float, Field(ge=0.0, le=0.05)] = 0.005
    expense_basis: FeeBasis = FeeBasis.COMMITTED
    fixed_expenses: Money = 100_000.0
    fixed_expense_growth: Growth = 0.02
    organisation_costs: Money = 250_000.0
    origination_fee_rate: Annotated[float, Field(ge=0.0, le=0.10)] = 0.03
    origination_fee_recipient: FeeRecipient = FeeRecipient.GP
    acquisition_fee_rate: Annotated[float, Field(ge=0.0, le=0.10)] = 0.0
    disposition_fee_rate: Annotated[float, Field(ge=0.0, le=0.10)] = 0.0


class Waterfall(_Model):
    structure: WaterfallStructure = WaterfallStructure.EUROPEAN
    hurdle_rate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.08
    hurdle_compounding: Compounding = Compounding.ANNUAL
    carry_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.20
    catch_up: CatchUp = CatchUp.FULL
    catch_up_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    management_fee_offset: Rate = 0.0
    clawback: bool = True
    loss_carryforward: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.catch_up is CatchUp.FULL and self.catch_up_rate != 1.0:
            raise ValueError("catch_up_rate: must be 1 for a full catch-up (use catch_up 'partial')")
        if self.catch_up is CatchUp.PARTIAL and not self.carry_rate < self.catch_up_rate < 1.0:
            raise ValueError("catch_up_rate: a partial catch-up rate must lie strictly between carry_rate and 1")
        return self


class TieredShare(_Model):
    """Share picked by total appreciation ``V_T/V0 - 1`` against ascending ``thresholds``."""

    thresholds: tuple[float, ...] = (0.2, 0.5, 1.0)
    shares: tuple[Rate, ...] = (0.10, 0.20, 0.30, 0.40)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(self.shares) != len(self.thresholds) + 1:
            raise ValueError("shares: tiered shares need exactly one more entry than thresholds")
        if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:])):
            raise ValueError("thresholds: must be strictly ascending")
        return self


class LoanTerms(_Model):
    interest_rate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    term_months: Annotated[int, Field(ge=12, le=360)] = 120
    appreciation_share_method: ShareMethod = ShareMethod.LTV_BASED
    appreciation_share_rate: Rate = 0.5
    tiered: TieredShare = TieredShare()
    share_depreciation: bool = False
    senior_ltv: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    sale_cost: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class Region(_Model):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    weight: Annotated[float, Field(gt=0.0, le=1e6)] = 1.0
    # Expected appreciation of the region over its zone: E[I_(zone, region)(t)] = ((1+g_zone)(1+spread))^t.
    drift_spread: Annotated[float, Field(ge=-0.2, le=0.2)] = 0.0


DEFAULT_REGIONS = (
    Region(name="sydney_north"),
    Region(name="sydney_east"),
    Region(name="sydney_west"),
    Region(name="sydney_south"),
)


class ZoneAllocation(_Model):
    green: Rate = 0.6
    orange: Rate = 0.3
    red: Rate = 0.1

    @model_validator(mode="after")
    def _check(self) -> Self:
        if abs(self.green + self.orange + self.red - 1.0) > 1e-9:
            raise ValueError("zone allocations must sum to 1")
        return self

    def as_array(self) -> np.ndarray:
        return np.array([self.green, self.orange, self.red])


class GeneratedBook(_Model):
    """Loans generated from parameters; sizes and LTVs are truncated normals."""

    avg_loan_size: PositiveMoney = 250_000.0
    loan_size_sd: Money = 50_000.0
    min_loan_size: PositiveMoney = 100_000.0
    max_loan_size: PositiveMoney = 500_000.0
    ltv_mean: OpenRate = 0.40
    ltv_sd: Annotated[float, Field(ge=0.0, le=1.0)] = 0.10
    min_ltv: OpenRate = 0.15
    max_ltv: OpenRate = 0.65
    zone_allocation: ZoneAllocation = ZoneAllocation()

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.min_loan_size <= self.avg_loan_size <= self.max_loan_size:
            raise ValueError("avg_loan_size: must lie within [min_loan_size, max_loan_size]")
        if not self.min_ltv <= self.ltv_mean <= self.max_ltv:
            raise ValueError("ltv_mean: must lie within [min_ltv, max_ltv]")
        return self


class ExistingLoan(_Model):
    """A loan of an explicit book, as a portfolio system reports it."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    amount: PositiveMoney
    property_value: PositiveMoney
    zone: Zone
    region: str
    origination_month: Annotated[int, Field(ge=0)] = 0
    interest_rate: Annotated[float, Field(ge=0.0, le=0.5)] | None = None
    appreciation_share: Rate | None = None
    planned_exit_month: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not 0.0 < self.amount / self.property_value < 1.0:
            raise ValueError("amount: LTV (amount / property_value) must lie in (0, 1)")
        if self.planned_exit_month is not None and self.planned_exit_month <= self.origination_month:
            raise ValueError("planned_exit_month: must come after origination_month")
        return self


class Book(_Model):
    """The initial book: explicit ``loans`` and/or loans ``generated`` to deploy the remaining target."""

    loans: tuple[ExistingLoan, ...] = ()
    generate: bool = True
    generated: GeneratedBook = GeneratedBook()
    regions: tuple[Region, ...] = DEFAULT_REGIONS

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [r.name for r in self.regions]
        if not names:
            raise ValueError("regions: at least one region is required")
        if len(set(names)) != len(names):
            raise ValueError("regions: region names must be unique")
        ids = [loan.id for loan in self.loans]
        if len(set(ids)) != len(ids):
            raise ValueError("loans: loan ids must be unique")
        unknown = sorted({loan.region for loan in self.loans} - set(names))
        if unknown:
            raise ValueError(f"loans: loans reference unknown regions {unknown}")
        if not self.loans and not self.generate:
            raise ValueError("loans: the book is empty: give loans or set generate")
        return self


class ZoneMarket(_Model):
    drift: Annotated[float, Field(ge=-0.5, le=0.5)]
    vol: Annotated[float, Field(ge=0.0, le=1.0)]
    default_hazard: Annotated[float, Field(ge=0.0, le=1.0)]
    recovery_haircut: Rate
    exit_hazard: Annotated[float, Field(gt=0.0, le=5.0)] | None = None


class ZoneCorrelation(_Model):
    green_orange: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.7
    green_red: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.5
    orange_red: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.8

    def matrix(self) -> np.ndarray:
        go, gr, orr = self.green_orange, self.green_red, self.orange_red
        return np.array([[1.0, go, gr], [go, 1.0, orr], [gr, orr, 1.0]])

    @model_validator(mode="after")
    def _check(self) -> Self:
        if np.linalg.eigvalsh(self.matrix()).min() < -1e-10:
            raise ValueError("zone correlation matrix is not positive semi-definite")
        return self


class Market(_Model):
    green: ZoneMarket = ZoneMarket(drift=0.055, vol=0.075, default_hazard=0.005, recovery_haircut=0.90)
    orange: ZoneMarket = ZoneMarket(drift=0.044, vol=0.090, default_hazard=0.0125, recovery_haircut=0.85)
    red: ZoneMarket = ZoneMarket(drift=0.037, vol=0.105, default_hazard=0.02, recovery_haircut=0.80)
    correlation: ZoneCorrelation = ZoneCorrelation()
    region_vol: Annotated[float, Field(ge=0.0, le=1.0)] = 0.03
    property_vol: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    avg_exit_year: Annotated[float, Field(gt=0.0, le=30.0)] = 7.0
    min_hold_years: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    exit_appreciation_sensitivity: Annotated[float, Field(ge=0.0, le=20.0)] = 2.0
    default_drawdown_sensitivity: Annotated[float, Field(ge=0.0, le=50.0)] = 5.0
    foreclosure_cost: Rate = 0.10
    foreclosure_months: Annotated[int, Field(ge=0, le=60)] = 12

    def zones(self) -> tuple[ZoneMarket, ZoneMarket, ZoneMarket]:
        return (self.green, self.orange, self.red)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min_hold_years >= self.avg_exit_year:
            raise ValueError("min_hold_years: must be shorter than avg_exit_year")
        return self


class MonteCarlo(_Model):
    paths: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 20231
    chunk_paths: Annotated[int, Field(ge=1, le=100_000)] = 1000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    deterministic: bool = False


class ZoneShift(_Model):
    """A change per zone; no change by default."""

    green: float = 0.0
    orange: float = 0.0
    red: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([self.green, self.orange, self.red])


class ZoneMultiplier(_Model):
    """A factor per zone; unchanged (1) by default."""

    green: float = 1.0
    orange: float = 1.0
    red: float = 1.0

    def as_array(self) -> np.ndarray:
        return np.array([self.green, self.orange, self.red])


class Stress(_Model):
    """A stress scenario applied on top of the market (domain §7.2); the default is no stress at all.

    Price: the zone indices jump by ``price_shock`` (a fraction, −0.3 = −30 %) at ``price_shock_month`` and
    stay there; inside ``[window_start_month, window_end_month)`` each zone's annual drift moves by
    ``drift_shift`` and its volatility is multiplied by ``vol_multiplier``. Credit and liquidity: the default
    hazard is multiplied by ``default_multiplier`` and the voluntary-exit hazard by ``exit_multiplier`` per
    zone; recoveries lose a further ``recovery_haircut``. The random numbers are those of the unstressed run
    (common random numbers), and the hazards keep their unstressed calibration, so a stressed run differs
    from its base only by the shock.
    """

    price_shock: ZoneShift = ZoneShift()
    price_shock_month: Annotated[int, Field(ge=0, le=360)] = 0
    drift_shift: ZoneShift = ZoneShift()
    vol_multiplier: ZoneMultiplier = ZoneMultiplier()
    window_start_month: Annotated[int, Field(ge=0, le=360)] = 0
    window_end_month: Annotated[int, Field(ge=0, le=360)] = 360
    default_multiplier: ZoneMultiplier = ZoneMultiplier()
    exit_multiplier: ZoneMultiplier = ZoneMultiplier()
    recovery_haircut: Rate = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        checks = ((self.price_shock, -0.95, 1.0, "price_shock"), (self.drift_shift, -0.5, 0.5, "drift_shift"),
                  (self.vol_multiplier, 0.0, 10.0, "vol_multiplier"),
                  (self.default_multiplier, 0.0, 50.0, "default_multiplier"),
                  (self.exit_multiplier, 0.0, 10.0, "exit_multiplier"))
        for values, low, high, name in checks:
            for zone, value in zip(ZONES, values.as_array()):
                if not (np.isfinite(value) and low <= value <= high):
                    raise ValueError(f"{name}.{zone}: must lie within [{low}, {high}]")
        if self.window_start_month > self.window_end_month:
            raise ValueError("window_end_month: must not come before window_start_month")
        return self

    @property
    def is_neutral(self) -> bool:
        return self == Stress()


class Reporting(_Model):
    discount_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.08
    risk_free_rate: Annotated[float, Field(ge=-0.1, le=1.0)] = 0.03
    min_acceptable_return: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.04
    target_irr: Annotated[float, Field(ge=-1.0, le=10.0)] = 0.15
    target_multiple: Annotated[float, Field(ge=0.0, le=100.0)] = 1.8
    histogram_bins: Annotated[int, Field(ge=2, le=1000)] = 50


class SimulationConfig(_Model):
    fund: FundTerms = FundTerms()
    fees: Fees = Fees()
    waterfall: Waterfall = Waterfall()
    loans: LoanTerms = LoanTerms()
    book: Book = Book()
    market: Market = Market()
    monte_carlo: MonteCarlo = MonteCarlo()
    reporting: Reporting = Reporting()
    stress: Stress = Stress()

    @model_validator(mode="after")
    def _check(self) -> Self:
        term_months = self.fund.term_years * 12
        late = [loan.id for loan in self.book.loans if loan.origination_month >= term_months]
        if late:
            raise ValueError(f"book.loans: loans originate after the fund term: {late[:5]}")
        explicit = sum(loan.amount for loan in self.book.loans)
        if explicit > self.fund.size:
            raise ValueError("book.loans: explicit loans exceed the fund size")
        if self.stress.price_shock_month > term_months:
            raise ValueError("stress.price_shock_month: must fall inside the fund term")
        shifted = [z.drift + s for z, s in zip(self.market.zones(), self.stress.drift_shift.as_array())]
        if min(shifted) <= -1.0:
            raise ValueError("stress.drift_shift: a shifted zone drift must stay above -100 %")
        needs_calibration = any(z.exit_hazard is None for z in self.market.zones())
        if needs_calibration and round(self.market.avg_exit_year * 12) > self.loans.term_months:
            raise ValueError("market.avg_exit_year: the median voluntary exit must come before loan maturity "
                             "(or give every zone an exit_hazard)")
        if self.committed_during_deployment() > self.fund.size * (1.0 + 1e-12):
            raise ValueError(
                "fund.deployment_target_fraction: the initial book, organisation costs, reserve and fees and "
                "expenses over the deployment period exceed the commitments")
        return self

    def committed_during_deployment(self) -> float:
        """Commitment needed by the end of deployment: book, organisation costs, reserve, running costs."""
        fund, fees = self.fund, self.fees
        book = max(fund.deployment_target_fraction * fund.size, sum(loan.amount for loan in self.book.loans))
        years = fund.deployment_period_years
        running = (fees.management_fee_rate + fees.expense_rate) * fund.size * years + fees.fixed_expenses * years
        return book + fees.organisation_costs + fund.reserve_fraction * fund.size + running

    @property
    def term_months(self) -> int:
        return self.fund.term_years * 12


def load_config(data: dict[str, Any] | None = None) -> SimulationConfig:
    """Validate a plain mapping (e.g. parsed JSON) into a ``SimulationConfig``."""
    try:
        return SimulationConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_violations(exc)) from None


_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.DOTALL)


def _violations(exc: ValidationError) -> list[tuple[str, str]]:
    """``(dotted field path, message)``; a validator names a sub-field as ``"field: message"``."""
    out = []
    for err in exc.errors():
        parts = [str(part) for part in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        named = _FIELD_PREFIX.match(message)
        if named:
            parts.append(named.group(1))
            message = named.group(2)
        out.append((".".join(parts) or "config", message))
    return out
