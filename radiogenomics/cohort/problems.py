"""Validation problems: what is wrong, where (patient, file, row) and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem found in a cohort folder.

    `code` is a stable machine-readable identifier (e.g. ``duplicate_patient_id``); `file` is relative to
    the cohort folder; `row` is the 1-based data row of a CSV table (header excluded), if any.
    """

    code: str
    message: str
    fix: str
    file: str | None = None
    patient_id: str | None = None
    row: int | None = None
    column: str | None = None
    severity: Severity = "error"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def one_line(self) -> str:
        where = [w for w in (
            f"patient {self.patient_id}" if self.patient_id else None,
            f"{self.file}" + (f" row {self.row}" if self.row is not None else "") if self.file else None,
            f"column {self.column}" if self.column else None,
        ) if w]
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.severity.upper()} {self.code}{loc}: {self.message} Fix: {self.fix}"


@dataclass
class ProblemList:
    """An append-only list of problems with convenience constructors."""

    items: list[Problem] = field(default_factory=list)

    def add(self, code: str, message: str, fix: str, **where: object) -> None:
        self.items.append(Problem(code=code, message=message, fix=fix, **where))  # type: ignore[arg-type]

    def extend(self, other: ProblemList | list[Problem]) -> None:
        self.items.extend(other.items if isinstance(other, ProblemList) else other)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
