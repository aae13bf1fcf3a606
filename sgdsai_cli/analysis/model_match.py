"""Whether a result and a baseline profile the same model: by fingerprint or by display name.

    match = match_models(current, baseline)
    match.same                  # compare their runs at all
    match.fingerprint_changed   # same name, other content: check reports a regression
    match.label                 # the model part of every run key on both sides

Never by how a path was spelled: names are compared after ``measure.identity.normalise_name``
(``./ci/x.json`` is ``ci/x.json``), and equal fingerprints match whatever the names. A result written
before fingerprints existed matches by name alone, with a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgdsai_cli.measure.identity import normalise_name
from sgdsai_cli.results import ProfileResult


@dataclass(frozen=True)
class ModelMatch:
    same: bool
    labels: tuple[str, str]  # (current, baseline): the model in each side's run keys (equal when same)
    fingerprints: tuple[str | None, str | None]  # (current, baseline)
    note: str | None = None

    @property
    def fingerprint_changed(self) -> bool:
        current, baseline = self.fingerprints
        return self.same and current is not None and baseline is not None and current != baseline


def model_name(result: ProfileResult) -> str:
    """The display name of ``result``'s model, path spelling normalised."""
    return normalise_name(result.model.name or result.spec.model or "")


def match_models(current: ProfileResult, baseline: ProfileResult) -> ModelMatch:
    """See the module docstring."""
    names = model_name(current), model_name(baseline)
    fps = current.model.fingerprint, baseline.model.fingerprint
    if fps[0] is not None and fps[0] == fps[1]:
        note = None if names[0] == names[1] else (f"models matched by fingerprint {fps[0]} "
                                                  f"(baseline '{names[1]}', now '{names[0]}')")
        return ModelMatch(True, (names[0], names[0]), fps, note)
    if names[0] == names[1]:
        note = None
        if fps[0] is None or fps[1] is None:
            side = "the baseline" if fps[1] is None else "the result"
            note = f"{side} has no model fingerprint (an older result): models matched by name '{names[0]}'"
        return ModelMatch(True, names, fps, note)
    return ModelMatch(False, names, fps)
