"""Exception types shared by every package.

`InputError` marks bad input (a file, a table, a dose, a payload): the CLI turns it into exit status 2
with its one-line message on stderr; the REST API into a 422. Anything else is an internal error.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. The message names the patient, the file or field, and the fix.

    `reason` is the bare message; `str(exc)` prefixes the location and appends the fix.
    """

    def __init__(self, message: str, *, patient_id: str | None = None, file: str | None = None,
                 fix: str | None = None) -> None:
        self.reason = message
        self.patient_id = patient_id
        self.file = file
        self.fix = fix
        parts = []
        if patient_id:
            parts.append(f"patient {patient_id}")
        if file:
            parts.append(f"file {file}")
        where = f"[{', '.join(parts)}] " if parts else ""
        tail = f" Fix: {fix}" if fix else ""
        super().__init__(f"{where}{message}{tail}")
