"""The matrix file: its models (derived from the settings table), loading with file:line
errors, and expansion into cells with stable ids. docs/matrix.md describes the format."""

from harness.matrix.cells import (
    CELL_ID_SCHEME,
    Cell,
    LoadedMatrix,
    canonical_json,
    cell_id,
    expand,
    make_cells,
)
from harness.matrix.load import load_matrix, parse_matrix
from harness.matrix.models import (
    Axes,
    CellSettings,
    Matrix,
    Patch,
    RunBlock,
    json_schema,
    make_models,
    schema_text,
)

__all__ = [
    "CELL_ID_SCHEME",
    "Axes",
    "Cell",
    "CellSettings",
    "LoadedMatrix",
    "Matrix",
    "Patch",
    "RunBlock",
    "canonical_json",
    "cell_id",
    "expand",
    "json_schema",
    "load_matrix",
    "make_cells",
    "make_models",
    "parse_matrix",
    "schema_text",
]
