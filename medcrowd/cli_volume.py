"""``medcrowd propagate`` (one box → a 3-D mask, offline).

Registered in ``medcrowd/cli.py``. The command parses its options, calls
:func:`medcrowd.propagate.propagate_to_folder` and prints; every expected failure is one
``error:`` line (:func:`medcrowd.connection.cli_errors`). The model is imported only when the
command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medcrowd.connection import cli_errors
from medcrowd.console import bars, console

__all__ = ["propagate_command"]


def propagate_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A volume (NIfTI, NRRD, MHA, DICOM file or series folder) or a folder of "
            "2-D slices (PNG/JPEG/TIFF, sorted by name, one size)."
        ),
    ],
    box: Annotated[
        str,
        typer.Option(help="The box on slice --index: x0,y0,x1,y1 in pixels of that slice."),
    ],
    index: Annotated[int, typer.Option(help="The slice the box is on (0-based, along --axis).")],
    out: Annotated[
        Path,
        typer.Option(help="Output folder: masks/*.png, mask.nii.gz (volumes), propagation.json."),
    ] = Path("propagation"),
    axis: Annotated[str, typer.Option(help="axial | coronal | sagittal (volumes).")] = "axial",
    window: Annotated[
        str | None,
        typer.Option(
            help="CT window as `medcrowd import` uses it: soft_tissue | lung | bone | brain | "
            "percentile (default: soft_tissue for CT, percentile otherwise)."
        ),
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="Override the modality read from the file (e.g. CT).")
    ] = None,
    predictor: Annotated[str, typer.Option(help="litemedsam | medsam | sam_vit_b|l|h.")] = (
        "litemedsam"
    ),
    checkpoint: Annotated[
        Path | None, typer.Option(help="Weights (required for medsam / sam_*).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "cpu",
) -> None:
    """Segment a structure through a volume from one box on one slice (offline).

    Each next slice is prompted with the previous mask's box; the walk stops at the
    structure's end (a mask that leaves the seed's intensity range, shrinks below a tenth of
    the previous one, or vanishes). Which slices were proposed, and why each walk stopped,
    is printed and kept in propagation.json.
    """
    with cli_errors(2):
        from medcrowd.propagate import load_stack, parse_box

        parsed = parse_box(box)
        slices, _, _ = load_stack(source, axis, window, modality)  # fails before the model
        if not 0 <= index < slices.shape[0]:
            raise ValueError(f"--index {index} is outside the {slices.shape[0]} slices (0-based)")
    with cli_errors(1):
        from medcrowd.propagate import propagate_to_folder
        from ml_backend.predictors import get_predictor

        model = get_predictor(predictor, device=device, checkpoint=checkpoint)
        with bars() as bar:
            task = bar.add_task("propagating", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=max(total, 1))

            summary = propagate_to_folder(
                source, parsed, index, out, axis=axis, window=window, modality=modality,
                predictor=model, progress=update,
            )  # fmt: skip
    proposed = summary.proposed
    span = f"{proposed[0]}..{proposed[-1]}" if proposed else "none"
    console.print(
        f"{len(proposed)} of {summary.slices} slices proposed ({span}), {summary.voxels} "
        f"voxels; walks stopped: {'; '.join(summary.stop_reasons)}; wrote {summary.out}",
        soft_wrap=True,
    )
