"""Per-amp health: the metrics table against thresholds per image type, ok / warning / fail.

Thresholds live in ``resources/health.toml`` (documented there), deep-merged with a user file.
Every flag carries its reasons (metric, value, threshold, comparison, level), so a report can
say *why* an amp is out of spec. Known problem amps of the real camera (``[known]``) come out
as ``known`` rather than as new failures.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from core.metrics import image_category
from core.resources import resource

STATUSES = ("ok", "warning", "known", "fail")  # from best to worst
_RANK = {s: i for i, s in enumerate(STATUSES)}
_LEVEL_RANK = {"warning": 1, "fail": 2}
_RULES = (  # (key, level, comparison)
    ("fail_above", "fail", ">"),
    ("fail_below", "fail", "<"),
    ("fail_outside", "fail", "outside"),
    ("warn_above", "warning", ">"),
    ("warn_below", "warning", "<"),
    ("warn_outside", "warning", "outside"),
)
_KINDS = ("science", "guider", "wavefront")


class HealthConfigError(ValueError):
    """A health configuration that cannot be used; the message names the file and the key."""


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(user: str | os.PathLike | Mapping | None = None) -> dict:
    """The shipped thresholds, with a user TOML file (or a dict) deep-merged over them."""
    with open(resource("health.toml"), "rb") as f:
        config = tomllib.load(f)
    if user is None:
        return config
    if isinstance(user, Mapping):
        over = dict(user)
    else:
        try:
            with open(user, "rb") as f:
                over = tomllib.load(f)
        except OSError as exc:
            raise HealthConfigError(
                f"{user}: cannot read the health configuration ({exc})"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise HealthConfigError(f"{user}: not valid TOML ({exc})") from exc
    known = over.get("known")
    if isinstance(known, list):  # a plain list of amp names is fine too
        over["known"] = {str(name): "" for name in known}
    return _deep_merge(config, over)


def checks_for(config: Mapping, category: str) -> dict[str, dict]:
    """The checks of an image category: ``default`` deep-merged with the category's own."""
    checks = _deep_merge(dict(config.get("default", {})), config.get(category, {}))
    return {name: dict(c) for name, c in checks.items() if isinstance(c, Mapping)}


@dataclass
class Reason:
    """Why an amp is flagged: ``metric`` ``comparison`` ``threshold`` at ``level``."""

    metric: str
    value: float
    threshold: float | list[float]
    comparison: str  # ">", "<", "outside"
    level: str  # warning | fail
    error: float | None = None

    @property
    def text(self) -> str:
        value = _fmt(self.value)
        if self.error is not None and math.isfinite(self.error):
            value += f" ± {_fmt(self.error)}"
        if self.comparison == "outside":
            lo, hi = self.threshold
            return f"{self.metric} {value} outside [{_fmt(lo)}, {_fmt(hi)}]"
        return f"{self.metric} {value} {self.comparison} {_fmt(self.threshold)}"

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["error"] is None:
            del d["error"]
        d["text"] = self.text
        return d


@dataclass
class AmpHealth:
    detector: str
    amp: str
    status: str
    reasons: list[Reason] = field(default_factory=list)
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.detector}_{self.amp}" if self.detector else self.amp

    @property
    def severity(self) -> tuple:
        """Sort key, worst first: status, number of fail reasons, of reasons."""
        fails = sum(r.level == "fail" for r in self.reasons)
        return (-_RANK[self.status], -fails, -len(self.reasons), self.name)

    def summary(self) -> str:
        why = "; ".join(r.text for r in self.reasons) or "ok"
        note = f" [known: {self.note}]" if self.status == "known" and self.note else ""
        return f"{self.name:<14s} {self.status:<8s} {why}{note}"

    def to_dict(self) -> dict:
        out = {
            "detector": self.detector,
            "amp": self.amp,
            "status": self.status,
            "reasons": [r.to_dict() for r in self.reasons],
        }
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class HealthReport:
    image_type: str | None
    category: str
    amps: list[AmpHealth]

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for a in self.amps:
            out[a.status] += 1
        return out

    @property
    def failed(self) -> bool:
        return any(a.status == "fail" for a in self.amps)

    def worst(self, n: int | None = None) -> list[AmpHealth]:
        """The flagged amps, worst first."""
        flagged = sorted((a for a in self.amps if a.status != "ok"), key=lambda a: a.severity)
        return flagged if n is None else flagged[:n]

    def amp(self, detector: str, amp: str) -> AmpHealth:
        for a in self.amps:
            if a.detector == detector and a.amp == amp:
                return a
        raise KeyError(f"no amp {detector}_{amp} in the report")

    def to_dict(self) -> dict:
        return {
            "image_type": self.image_type,
            "category": self.category,
            "counts": self.counts,
            "amps": [a.to_dict() for a in self.amps],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, default=_json_default, **kw)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    x = float(x)
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 0.01:
        return f"{x:.4g}"
    return f"{x:.3g}"


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _check_amp(checks: dict[str, dict], row: dict, kind: str) -> list[Reason]:
    reasons = []
    for metric, check in checks.items():
        if kind in check and isinstance(check[kind], Mapping):
            check = {**check, **check[kind]}
        if not check.get("enabled", True) or metric not in row:
            continue
        value = _finite(row[metric])
        if value is None:
            continue
        err = _finite(row.get(check["error"])) if "error" in check else None
        margin = float(check.get("n_sigma", 0.0)) * (err or 0.0)
        for key, level, comparison in _RULES:
            if key not in check:
                continue
            t = check[key]
            if comparison == ">":
                hit = value - margin > float(t)
            elif comparison == "<":
                hit = value + margin < float(t)
            else:
                lo, hi = (float(v) for v in t)
                hit = value - margin > hi or value + margin < lo
            if hit:
                threshold = [float(v) for v in t] if comparison == "outside" else float(t)
                reasons.append(Reason(metric, value, threshold, comparison, level, err))
                break  # the worst level of this metric is enough
    return reasons


def evaluate(
    metrics_table: Mapping[str, np.ndarray],
    image_type: str | None,
    config: str | os.PathLike | Mapping | None = None,
) -> HealthReport:
    """Every amp of ``metrics_table`` (columns as ``core.metrics.amp_metrics`` plus ``detector``
    and ``amp``, optionally ``kind``) checked against the thresholds of its image type.

    ``config``: None (the shipped thresholds), a user TOML path or a dict, deep-merged over them.
    """
    cfg = load_config(config)
    category = image_category(image_type)
    checks = checks_for(cfg, category)
    known = {str(k): str(v) for k, v in cfg.get("known", {}).items()}
    columns = {k: np.asarray(v) for k, v in metrics_table.items()}
    n = len(next(iter(columns.values()))) if columns else 0
    if "read_noise_ratio" not in columns and "read_noise_expected_e" in columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            columns["read_noise_ratio"] = columns["read_noise_e"] / columns[
                "read_noise_expected_e"
            ].astype(float)
    amps = []
    for i in range(n):
        row = {k: v[i] for k, v in columns.items()}
        detector = str(row.get("detector", ""))
        amp = str(row.get("amp", i))
        kind = str(row.get("kind", "science"))
        if _finite(row.get("dead")) and "dead" in checks:
            reasons = _check_amp({"dead": checks["dead"]}, row, kind)
        else:
            reasons = _check_amp(checks, row, kind)
        levels = {r.level for r in reasons}
        status = "fail" if "fail" in levels else "warning" if levels else "ok"
        key = f"{detector}_{amp}"
        note = ""
        if status != "ok" and key in known:
            status, note = "known", known[key]
        amps.append(AmpHealth(detector, amp, status, reasons, note))
    return HealthReport(image_type, category, amps)


def evaluate_exposure(exposure, config=None) -> HealthReport:
    """``evaluate`` on an opened exposure store's ``metrics`` table."""
    table = exposure.table("metrics")
    if not table:
        raise HealthConfigError(f"{exposure.url}: the exposure has no metrics table")
    return evaluate(table, exposure.attrs.get("image_type"), config)
